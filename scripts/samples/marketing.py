"""Hand-written, illustrative product catalogue: a title and attributes -> marketing copy (fictional products)."""

import random

# family: (title patterns, attribute pools, opening lines, feature lines, closing lines)
FAMILIES = {
    "water bottle": (
        ["{brand} {capacity} Insulated Bottle", "{brand} Steel Bottle {capacity}"],
        {
            "material": ["stainless steel", "recycled steel", "BPA-free Tritan"],
            "capacity": ["500 ml", "750 ml", "1 litre"],
            "colour": ["forest green", "matte black", "ocean blue", "sand"],
            "price": ["$19.00", "$24.00", "$29.00"],
            "features": ["keeps drinks cold for 24 hours", "leak-proof lid", "fits car cup holders", "dishwasher-safe cap"],
        },
        ["Stay refreshed all day with the {title}.", "Meet the {title}, your everyday hydration partner."],
        ["Made from {material} in {colour}, it holds {capacity}.", "It {features} and holds a generous {capacity}."],
        ["Yours for {price}.", "Grab yours today for just {price}."],
    ),
    "backpack": (
        ["{brand} {capacity} Daypack", "{brand} Commuter Backpack"],
        {
            "material": ["water-resistant nylon", "recycled polyester", "waxed canvas"],
            "capacity": ["18 L", "22 L", "28 L"],
            "colour": ["charcoal", "olive", "navy", "rust"],
            "price": ["$59.00", "$79.00", "$99.00"],
            "features": [
                "a padded 15-inch laptop sleeve",
                "hidden anti-theft pocket",
                "breathable back panel",
                "side bottle pockets",
            ],
        },
        ["The {title} is built for busy days.", "Carry everything you need with the {title}."],
        [
            "Crafted from {material} in {colour}, it offers {capacity} of space and {features}.",
            "With {features} and {capacity} of room, its {material} shell shrugs off the weather.",
        ],
        ["Available now for {price}.", "All this for {price}."],
    ),
    "headphones": (
        ["{brand} Wireless Headphones", "{brand} Noise-Cancelling Earbuds"],
        {
            "battery": ["20 hours", "30 hours", "40 hours"],
            "colour": ["white", "black", "midnight blue"],
            "connectivity": ["Bluetooth 5.3", "Bluetooth 5.2 with multipoint"],
            "price": ["$49.00", "$89.00", "$149.00"],
            "features": [
                "active noise cancellation",
                "a quick-charge mode",
                "a built-in microphone for calls",
                "sweat resistance",
            ],
        },
        ["Hear every detail with the {title}.", "Lose yourself in music with the {title}."],
        [
            "Enjoy up to {battery} of playback, {features} and {connectivity}.",
            "In {colour}, they pair over {connectivity} and give you {battery} of listening.",
        ],
        ["Order yours for {price}.", "Priced at {price}."],
    ),
    "coffee": (
        ["{brand} {origin} Single-Origin Coffee", "{brand} {roast} Roast Beans"],
        {
            "origin": ["Ethiopia", "Colombia", "Guatemala", "Kenya"],
            "roast": ["light", "medium", "dark"],
            "notes": ["chocolate and cherry", "citrus and honey", "caramel and almond", "berries and jasmine"],
            "weight": ["250 g", "500 g", "1 kg"],
            "price": ["$12.00", "$18.00", "$32.00"],
        },
        ["Start your morning with the {title}.", "Discover the {title}."],
        [
            "This {roast} roast from {origin} brings notes of {notes}.",
            "Roasted {roast} to bring out {notes}, it comes in a {weight} bag.",
        ],
        ["A {weight} bag costs {price}.", "Only {price} for {weight}."],
    ),
    "city apartment": (
        ["Bright {bedrooms}-Bedroom Flat in {area}", "Cosy {area} Apartment near the Centre"],
        {
            "bedrooms": ["1", "2", "3"],
            "accommodates": ["2", "4", "6"],
            "area": ["Old Town", "Leith", "Stockbridge", "Marchmont"],
            "price": ["$85.00", "$120.00", "$180.00"],
            "amenities": ["fast wifi", "a fully equipped kitchen", "a washing machine", "free parking"],
        },
        ["Welcome to our {title}!", "Make yourself at home in this {title}."],
        [
            "It sleeps {accommodates} guests in {bedrooms} bedroom(s) and has {amenities}.",
            "Located in {area}, the flat offers {amenities} and space for {accommodates}.",
        ],
        ["Nightly rates from {price}.", "Book now from {price} per night."],
    ),
    "yoga mat": (
        ["{brand} Eco Yoga Mat", "{brand} {thickness} Grip Mat"],
        {
            "material": ["natural rubber", "cork", "TPE foam"],
            "thickness": ["4 mm", "6 mm", "8 mm"],
            "colour": ["lavender", "sage", "slate grey"],
            "price": ["$35.00", "$55.00", "$75.00"],
            "features": ["a non-slip surface", "alignment lines", "a carrying strap", "easy-clean texture"],
        },
        ["Find your flow on the {title}.", "Upgrade your practice with the {title}."],
        [
            "The {thickness} {material} cushions your joints and has {features}.",
            "Made of {material} in {colour}, it offers {features}.",
        ],
        ["Just {price}.", "Yours for {price}."],
    ),
    "desk lamp": (
        ["{brand} LED Desk Lamp", "{brand} Dimmable Task Light"],
        {
            "brightness": ["5 levels", "7 levels", "stepless dimming"],
            "colour": ["white", "black", "brass"],
            "power": ["USB-C", "mains with a USB charging port"],
            "price": ["$29.00", "$45.00", "$65.00"],
            "features": ["adjustable colour temperature", "a flexible arm", "an auto-off timer", "flicker-free light"],
        },
        ["Light up your workspace with the {title}.", "Work and read in comfort with the {title}."],
        [
            "It offers {brightness} of brightness, {features} and {power} power.",
            "Finished in {colour}, it adds {features} to any desk.",
        ],
        ["Available for {price}.", "On sale now at {price}."],
    ),
    "running shoes": (
        ["{brand} Trail Runner", "{brand} Road Racer {version}"],
        {
            "version": ["2", "3", "4"],
            "drop": ["4 mm", "6 mm", "8 mm"],
            "weight": ["240 g", "270 g", "300 g"],
            "colour": ["volt yellow", "black and white", "coral"],
            "price": ["$110.00", "$130.00", "$160.00"],
            "features": ["a responsive foam midsole", "a grippy outsole", "a breathable mesh upper", "reflective details"],
        },
        ["Go further with the {title}.", "Built for your next personal best: the {title}."],
        [
            "At just {weight} with a {drop} drop, it features {features}.",
            "In {colour}, it combines {features} with a {drop} drop.",
        ],
        ["Yours for {price}.", "Lace up for {price}."],
    ),
}
BRANDS = ["Northwind", "Alder", "Brightline", "Kestrel", "Mossgrove", "Tidewater", "Larkspur", "Copperfield"]


def records(n: int = 240, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    out, seen = [], set()
    families = list(FAMILIES.items())
    while len(out) < n:
        family, (titles, pools, openings, features, closings) = families[len(out) % len(families)]
        attrs = {k: rng.choice(v) for k, v in pools.items()}
        brand = rng.choice(BRANDS)
        title = rng.choice(titles).format(brand=brand, **attrs)
        if (title, tuple(attrs.items())) in seen:
            continue
        seen.add((title, tuple(attrs.items())))
        fill = {"title": title, **attrs}
        description = " ".join(
            [rng.choice(openings).format(**fill), rng.choice(features).format(**fill), rng.choice(closings).format(**fill)]
        )
        out.append(
            {
                "product": title,
                "attributes": {"category": family, **attrs},
                "description": description,
                "group": title,  # one product, one split
                "id": f"sample-marketing-{len(out):03d}",
            }
        )
    return out
