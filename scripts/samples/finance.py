"""Hand-written, illustrative annual-report excerpts of fictional companies, in TAT-QA's record format.

Each company has a small table (two fiscal years) and a paragraph; its questions are answered by a span of the
paragraph, a table cell, several cells (multi-span) or a count. Every number and name is invented. A company's
questions share a `group`, so the split keeps a report's questions together (as TAT-QA's real split does).
"""

# name, industry, unit, three line items with (this year, last year), segment names, headquarters, auditor
COMPANIES = [
    (
        "Brightwater Foods",
        "packaged foods",
        "thousands",
        [("Net sales", "412,300", "389,120"), ("Gross profit", "121,050", "110,600"), ("Marketing expense", "18,200", "17,950")],
        ["Snacks", "Beverages", "Frozen"],
        "Leeds",
        "Hallam & Poole LLP",
    ),
    (
        "Corvane Robotics",
        "industrial automation",
        "millions",
        [("Revenue", "88.4", "71.9"), ("Research and development", "14.2", "12.8"), ("Operating income", "9.7", "6.1")],
        ["Arms", "Vision systems"],
        "Tampere",
        "Nordvik Audit Oy",
    ),
    (
        "Maple Ridge Energy",
        "renewable power",
        "millions",
        [("Revenue", "256.0", "231.5"), ("Capital expenditure", "97.3", "120.4"), ("Net income", "31.8", "27.2")],
        ["Wind", "Solar", "Storage", "Services"],
        "Calgary",
        "Duncan Shaw LLP",
    ),
    (
        "Quillstone Publishing",
        "educational publishing",
        "thousands",
        [("Net sales", "64,480", "66,010"), ("Royalties paid", "9,870", "10,240"), ("Operating income", "5,120", "6,430")],
        ["Schools", "Higher education"],
        "Oxford",
        "Whitcombe Partners",
    ),
    (
        "Tessaly Logistics",
        "freight forwarding",
        "millions",
        [("Revenue", "1,204.6", "1,118.3"), ("Fuel costs", "211.9", "245.0"), ("Operating income", "66.2", "51.7")],
        ["Air", "Ocean", "Road"],
        "Rotterdam",
        "Van Leeuwen Accountants",
    ),
    (
        "Halcyon Health Devices",
        "medical devices",
        "thousands",
        [("Net sales", "98,760", "91,220"), ("Warranty provision", "1,430", "1,510"), ("Net income", "7,940", "6,880")],
        ["Monitors", "Infusion pumps"],
        "Minneapolis",
        "Grant Ellery LLP",
    ),
    (
        "Orchard Lane Retail",
        "home goods retail",
        "millions",
        [("Net sales", "540.2", "512.7"), ("Store count", "212", "198"), ("Operating income", "28.9", "30.4")],
        ["Stores", "Online"],
        "Columbus",
        "Pryor Whitfield LLP",
    ),
    (
        "Keystone Cement",
        "building materials",
        "millions",
        [("Revenue", "731.5", "688.0"), ("Energy costs", "144.8", "129.1"), ("EBITDA", "152.3", "140.6")],
        ["Cement", "Aggregates", "Ready-mix"],
        "Pittsburgh",
        "Marlow Kent LLP",
    ),
    (
        "Saltmarsh Software",
        "accounting software",
        "thousands",
        [
            ("Subscription revenue", "45,900", "38,400"),
            ("Services revenue", "6,210", "6,870"),
            ("Operating loss", "(2,340)", "(4,120)"),
        ],
        ["Small business", "Enterprise"],
        "Dublin",
        "Ferris O'Neill",
    ),
    (
        "Pinecrest Hotels",
        "hospitality",
        "millions",
        [("Revenue", "318.7", "276.4"), ("Occupancy rate", "74%", "68%"), ("Net income", "22.5", "14.9")],
        ["Resorts", "City hotels", "Franchising"],
        "Denver",
        "Ashby Crane LLP",
    ),
    (
        "Vellum Paper Mills",
        "paper and packaging",
        "millions",
        [("Net sales", "402.9", "421.6"), ("Pulp costs", "131.0", "150.2"), ("Net income", "12.4", "9.8")],
        ["Packaging", "Specialty paper"],
        "Gothenburg",
        "Lindqvist Revision AB",
    ),
    (
        "Arcadia Water",
        "water utility",
        "thousands",
        [("Operating revenue", "187,400", "179,900"), ("Pipe replaced (km)", "42", "37"), ("Net income", "24,100", "22,800")],
        ["Regulated water", "Wastewater"],
        "Sacramento",
        "Bell Ortega LLP",
    ),
    (
        "Northgale Airlines",
        "regional aviation",
        "millions",
        [("Passenger revenue", "612.3", "548.9"), ("Fuel expense", "188.7", "171.2"), ("Load factor", "81.2%", "79.5%")],
        ["Domestic", "International", "Cargo"],
        "Aberdeen",
        "Kerr Munro LLP",
    ),
    (
        "Lumen Semiconductors",
        "chip design",
        "millions",
        [("Revenue", "1,902.0", "1,644.5"), ("Research and development", "402.7", "366.1"), ("Gross margin", "58.4%", "55.9%")],
        ["Data center", "Automotive", "Consumer"],
        "Hsinchu",
        "Chen & Lai CPAs",
    ),
    (
        "Ferncliff Insurance",
        "property insurance",
        "millions",
        [("Premiums written", "845.1", "802.6"), ("Claims paid", "512.4", "560.8"), ("Combined ratio", "94.1%", "99.3%")],
        ["Home", "Commercial property"],
        "Hartford",
        "Sutton Greaves LLP",
    ),
    (
        "Bramble Toys",
        "toys and games",
        "thousands",
        [("Net sales", "73,640", "69,210"), ("Inventory", "15,880", "17,430"), ("Net income", "4,020", "3,110")],
        ["Board games", "Outdoor toys", "Puzzles"],
        "Nuremberg",
        "Hoffmann Treuhand",
    ),
    (
        "Granite Peak Mining",
        "copper mining",
        "millions",
        [("Revenue", "1,488.9", "1,312.0"), ("Copper produced (kt)", "212", "204"), ("Net income", "301.6", "244.8")],
        ["Open pit", "Underground"],
        "Santiago",
        "Rojas Vidal Auditores",
    ),
    (
        "Seabright Telecom",
        "mobile networks",
        "millions",
        [
            ("Service revenue", "2,310.4", "2,255.9"),
            ("Subscribers (thousands)", "8,940", "8,610"),
            ("Capital expenditure", "402.2", "388.7"),
        ],
        ["Mobile", "Fixed broadband", "Wholesale"],
        "Lisbon",
        "Matos Ferreira SROC",
    ),
    (
        "Hollis Biotech",
        "biotechnology",
        "thousands",
        [
            ("Collaboration revenue", "28,500", "19,200"),
            ("Research and development", "61,300", "54,900"),
            ("Net loss", "(41,700)", "(43,200)"),
        ],
        ["Oncology", "Rare diseases"],
        "Cambridge",
        "Tate Ridley LLP",
    ),
    (
        "Wren & Ashdown Foods",
        "bakery products",
        "thousands",
        [("Net sales", "126,700", "118,300"), ("Flour costs", "21,900", "19,600"), ("Operating income", "9,450", "8,870")],
        ["Bread", "Cakes", "Food service"],
        "Bristol",
        "Hallam & Poole LLP",
    ),
    (
        "Cobalt Ridge Motors",
        "electric vehicles",
        "millions",
        [("Revenue", "684.5", "402.1"), ("Vehicles delivered", "14,210", "8,530"), ("Operating loss", "(88.3)", "(121.7)")],
        ["Passenger cars", "Vans"],
        "Gothenburg",
        "Lindqvist Revision AB",
    ),
    (
        "Tidewater Ports",
        "port operations",
        "millions",
        [("Revenue", "422.8", "401.5"), ("Containers handled (thousand TEU)", "3,120", "2,980"), ("Net income", "71.9", "66.0")],
        ["Containers", "Bulk", "Logistics parks"],
        "Antwerp",
        "Van Leeuwen Accountants",
    ),
]

YEARS = ("2024", "2023")


def _context(
    name: str, industry: str, unit: str, rows: list[tuple[str, str, str]], segments: list[str], city: str, auditor: str
) -> str:
    table = [f" | {YEARS[0]} | {YEARS[1]}", *(f"{item} | {a} | {b}" for item, a, b in rows)]
    article = "an" if industry[0] in "aeiou" else "a"
    paragraph = (
        f"{name} is {article} {industry} company headquartered in {city}. It reports its results in "
        f"{len(segments)} segments: {', '.join(segments[:-1]) + ' and ' + segments[-1] if len(segments) > 1 else segments[0]}. "
        f"Amounts in the table are in {unit} unless stated otherwise. The financial statements were audited by {auditor}."
    )
    return "Table:\n" + "\n".join(table) + "\n\n" + paragraph


def records() -> list[dict]:
    out = []
    for i, (name, industry, unit, rows, segments, city, auditor) in enumerate(COMPANIES):
        context = _context(name, industry, unit, rows, segments, city, auditor)
        (item0, now0, before0), (item1, _, before1), (item2, now2, _) = rows
        questions = [
            (f"What was the {item0.lower()} in {YEARS[0]}?", [now0], "span", "table"),
            (f"What was the {item1.lower()} in {YEARS[1]}?", [before1], "span", "table"),
            (f"What were the {item0.lower()} in {YEARS[0]} and {YEARS[1]}?", [now0, before0], "multi-span", "table"),
            (f"What was the {item2.lower()} in {YEARS[0]}?", [now2], "span", "table"),
            ("Where is the company headquartered?", [city], "span", "text"),
            ("Who audited the financial statements?", [auditor], "span", "text"),
            ("What are the company's segments?", list(segments), "multi-span", "text"),
            ("How many segments does the company report?", [str(len(segments))], "count", "text"),
            ("In what unit are the amounts in the table?", [unit], "span", "text"),
        ]
        for j, (question, spans, answer_type, source) in enumerate(questions):
            out.append(
                {
                    "id": f"sample-finance-{i:02d}-{j}",
                    "question": question,
                    "answer": ", ".join(spans),
                    "context": context,
                    "answer_spans": spans,
                    "answer_type": answer_type,
                    "answer_from": source,
                    "scale": "",
                    "group": name,  # a report's questions stay in one split
                }
            )
    return out
