"""Hand-written, illustrative claims with evidence and a verdict (general science knowledge, simplified).

Each fact gives three records: a true claim with its evidence, a false variant with the same evidence, and
the true claim paired with another fact's evidence (not enough info). All three share a `group`, so the
split keeps a fact's records together. Each record also carries a made-up abstract (`abstract_sentences`) with
its evidence sentence among others and that sentence's position (`evidence_indices`), like the real data, for
data=fact_checking_cited.
"""

# (true claim, false claim, evidence)
FACTS = [
    (
        "Water boils at 100 degrees Celsius at sea level.",
        "Water boils at 60 degrees Celsius at sea level.",
        "At standard atmospheric pressure, pure water reaches its boiling point at 100 °C.",
    ),
    (
        "The Earth orbits the Sun about once every 365 days.",
        "The Earth orbits the Sun about once every 30 days.",
        "A full orbit of the Earth around the Sun takes roughly 365.25 days.",
    ),
    (
        "Vitamin C deficiency can cause scurvy.",
        "Vitamin C deficiency causes diabetes.",
        "Scurvy results from a prolonged lack of vitamin C in the diet.",
    ),
    (
        "Antibiotics do not work against viruses.",
        "Antibiotics cure viral infections such as the common cold.",
        "Antibiotics target bacteria and have no effect on viruses such as those causing colds.",
    ),
    (
        "Regular handwashing reduces the spread of infections.",
        "Handwashing has no effect on the spread of infections.",
        "Studies show that washing hands with soap lowers the transmission of many infections.",
    ),
    (
        "The human heart has four chambers.",
        "The human heart has two chambers.",
        "The human heart is made of two atria and two ventricles.",
    ),
    (
        "Smoking increases the risk of lung cancer.",
        "Smoking lowers the risk of lung cancer.",
        "Tobacco smoking is the leading cause of lung cancer worldwide.",
    ),
    (
        "Light travels faster than sound.",
        "Sound travels faster than light.",
        "Light moves at about 300,000 km per second, while sound in air moves at about 343 metres per second.",
    ),
    (
        "Plants release oxygen during photosynthesis.",
        "Plants release carbon monoxide during photosynthesis.",
        "Photosynthesis converts carbon dioxide and water into sugar and oxygen.",
    ),
    (
        "Diamonds are made of carbon.",
        "Diamonds are made of silicon.",
        "A diamond is a crystal of carbon atoms arranged in a rigid lattice.",
    ),
    ("Bats are mammals.", "Bats are birds.", "Bats are mammals: they have fur and feed their young with milk."),
    (
        "Vaccines train the immune system to recognise a pathogen.",
        "Vaccines work by killing all bacteria in the body.",
        "Vaccines expose the immune system to a harmless part or form of a pathogen so it can respond faster later.",
    ),
    (
        "The Moon reflects light from the Sun.",
        "The Moon produces its own light.",
        "Moonlight is sunlight reflected from the Moon's surface.",
    ),
    (
        "Sleep helps consolidate memories.",
        "Sleep erases the memories formed during the day.",
        "Research shows that sleep supports the consolidation of newly learned information.",
    ),
    (
        "Iron is needed to make hemoglobin.",
        "Iron is not used anywhere in the human body.",
        "Hemoglobin, the protein that carries oxygen in red blood cells, contains iron.",
    ),
    (
        "Mount Everest is the highest mountain above sea level.",
        "Mont Blanc is the highest mountain above sea level.",
        "Mount Everest rises about 8,849 metres above sea level, higher than any other mountain.",
    ),
    (
        "Regular exercise lowers blood pressure in many adults.",
        "Regular exercise always raises blood pressure permanently.",
        "Trials show that regular aerobic exercise reduces resting blood pressure in many adults.",
    ),
    (
        "Sugar-sweetened drinks can contribute to tooth decay.",
        "Sugar-sweetened drinks protect teeth from decay.",
        "Bacteria in the mouth turn sugar into acid that damages tooth enamel.",
    ),
    (
        "The Pacific is the largest ocean on Earth.",
        "The Atlantic is the largest ocean on Earth.",
        "The Pacific Ocean covers more area than any other ocean.",
    ),
    (
        "Sunscreen reduces the risk of sunburn.",
        "Sunscreen increases the risk of sunburn.",
        "Applying sunscreen blocks part of the ultraviolet radiation that causes sunburn.",
    ),
    (
        "Humans have 23 pairs of chromosomes.",
        "Humans have 50 pairs of chromosomes.",
        "Human cells normally contain 46 chromosomes arranged in 23 pairs.",
    ),
    (
        "Penguins live mainly in the Southern Hemisphere.",
        "Penguins live mainly at the North Pole.",
        "Almost all penguin species live in the Southern Hemisphere, many around Antarctica.",
    ),
    (
        "Fibre in the diet helps digestion.",
        "Dietary fibre stops digestion entirely.",
        "Dietary fibre adds bulk to stool and supports regular bowel movements.",
    ),
    (
        "Copper is a good conductor of electricity.",
        "Copper does not conduct electricity.",
        "Copper is widely used in electrical wiring because it conducts electricity well.",
    ),
    (
        "The speed of a falling object in a vacuum does not depend on its mass.",
        "Heavier objects always fall faster in a vacuum.",
        "In a vacuum, all objects accelerate toward the Earth at the same rate regardless of mass.",
    ),
    (
        "Chronic stress can affect physical health.",
        "Stress never has any effect on the body.",
        "Long-term stress is linked to raised blood pressure, poor sleep and weakened immunity.",
    ),
    (
        "Whales breathe air through lungs.",
        "Whales breathe water through gills.",
        "Whales are mammals that surface to breathe air into their lungs.",
    ),
    (
        "Calcium is important for bone health.",
        "Calcium weakens bones.",
        "Bones store most of the body's calcium, which keeps them strong.",
    ),
    (
        "The Sahara is a desert in Africa.",
        "The Sahara is a rainforest in South America.",
        "The Sahara is a large hot desert covering much of North Africa.",
    ),
    (
        "Insulin lowers blood sugar levels.",
        "Insulin raises blood sugar levels.",
        "Insulin helps cells take in glucose from the blood, lowering blood sugar.",
    ),
    (
        "Ice is less dense than liquid water.",
        "Ice is denser than liquid water.",
        "Ice floats because it is about 9% less dense than liquid water.",
    ),
    (
        "Measles is caused by a virus.",
        "Measles is caused by a lack of vitamin D.",
        "Measles is a highly contagious disease caused by the measles virus.",
    ),
    (
        "The Great Wall of China is thousands of kilometres long.",
        "The Great Wall of China is about one kilometre long.",
        "Surveys measure the Great Wall and its branches at over 20,000 kilometres.",
    ),
    (
        "Drinking alcohol while pregnant can harm the baby.",
        "Alcohol during pregnancy is good for the baby.",
        "Alcohol crosses the placenta and can cause fetal alcohol spectrum disorders.",
    ),
    (
        "Earthquakes are caused by movements of tectonic plates.",
        "Earthquakes are caused by the phases of the Moon.",
        "Most earthquakes happen when stress along faults between tectonic plates is suddenly released.",
    ),
    (
        "The brain uses about a fifth of the body's energy.",
        "The brain uses no energy at rest.",
        "Although it is about 2% of body weight, the brain consumes roughly 20% of the body's energy at rest.",
    ),
    (
        "Honey bees help pollinate crops.",
        "Honey bees prevent crops from being pollinated.",
        "Honey bees carry pollen between flowers, pollinating many food crops.",
    ),
    (
        "Wearing a seat belt reduces the risk of death in a car crash.",
        "Seat belts increase the risk of death in a car crash.",
        "Seat belts cut the risk of fatal injury for front-seat passengers by about half.",
    ),
    (
        "Oxygen makes up about 21% of Earth's atmosphere.",
        "Oxygen makes up about 80% of Earth's atmosphere.",
        "Dry air is about 78% nitrogen and 21% oxygen.",
    ),
    (
        "Tuberculosis is a bacterial infection.",
        "Tuberculosis is caused by eating too much salt.",
        "Tuberculosis is caused by the bacterium Mycobacterium tuberculosis.",
    ),
    (
        "The Amazon is one of the longest rivers in the world.",
        "The Amazon is a short river in Europe.",
        "The Amazon River in South America flows for about 6,400 kilometres.",
    ),
    (
        "Eating fruit and vegetables is part of a healthy diet.",
        "Fruit and vegetables have no nutritional value.",
        "Fruit and vegetables provide vitamins, minerals and fibre that support health.",
    ),
    (
        "Mercury is the closest planet to the Sun.",
        "Neptune is the closest planet to the Sun.",
        "Mercury orbits closer to the Sun than any other planet in the solar system.",
    ),
    (
        "Hearing can be damaged by loud noise.",
        "Loud noise improves hearing.",
        "Long or repeated exposure to sounds above about 85 decibels can damage the inner ear.",
    ),
    (
        "DNA carries genetic information.",
        "DNA stores energy for muscles.",
        "DNA holds the genetic instructions used to build and run living organisms.",
    ),
    (
        "A healthy adult resting heart rate is usually between 60 and 100 beats per minute.",
        "A healthy adult resting heart rate is usually about 200 beats per minute.",
        "For most adults, a normal resting heart rate ranges from 60 to 100 beats per minute.",
    ),
    (
        "Mosquitoes can spread malaria.",
        "Malaria spreads through mobile phone signals.",
        "Malaria parasites are transmitted to people through the bites of infected mosquitoes.",
    ),
    (
        "Glass is made mainly from sand.",
        "Glass is made mainly from wood.",
        "Most glass is made by melting silica sand with soda and lime.",
    ),
    (
        "Too much salt can raise blood pressure.",
        "Salt has no effect on blood pressure in anyone.",
        "High sodium intake is associated with higher blood pressure in many people.",
    ),
    ("Sharks are fish.", "Sharks are mammals.", "Sharks are cartilaginous fish that breathe through gills."),
    (
        "Sound cannot travel through a vacuum.",
        "Sound travels fastest through a vacuum.",
        "Sound needs a medium such as air or water; it cannot travel through empty space.",
    ),
    (
        "Breastfeeding provides antibodies to babies.",
        "Breast milk contains no antibodies.",
        "Breast milk contains antibodies that help protect infants from infections.",
    ),
    (
        "The Arctic sea ice has shrunk in recent decades.",
        "The Arctic sea ice has doubled in recent decades.",
        "Satellite records since 1979 show a clear decline in Arctic sea ice extent.",
    ),
    (
        "Caffeine is a stimulant.",
        "Caffeine is a sedative that causes sleep.",
        "Caffeine stimulates the central nervous system and can reduce the feeling of tiredness.",
    ),
    (
        "Volcanoes can release ash into the atmosphere.",
        "Volcanoes only release fresh water.",
        "Explosive volcanic eruptions throw ash and gases high into the atmosphere.",
    ),
    (
        "Lack of sleep can impair concentration.",
        "Lack of sleep improves concentration.",
        "Sleep deprivation reduces attention, memory and reaction time.",
    ),
    ("Gold does not rust.", "Gold rusts quickly in air.", "Gold is chemically unreactive and does not corrode in air or water."),
    (
        "Kidneys filter waste from the blood.",
        "Kidneys pump blood around the body.",
        "The kidneys filter waste and extra water from the blood to make urine.",
    ),
    (
        "Rainbows form when light is refracted in water droplets.",
        "Rainbows are made of coloured dust.",
        "A rainbow appears when sunlight is refracted, reflected and dispersed in raindrops.",
    ),
    (
        "The appendix is part of the digestive tract.",
        "The appendix is part of the brain.",
        "The appendix is a small pouch attached to the large intestine.",
    ),
    (
        "Physical activity can improve mood.",
        "Physical activity always worsens mood.",
        "Exercise has been shown to reduce symptoms of anxiety and depression in many people.",
    ),
    (
        "Carbon dioxide is a greenhouse gas.",
        "Carbon dioxide cools the planet by blocking sunlight.",
        "Carbon dioxide absorbs infrared radiation and contributes to the greenhouse effect.",
    ),
    (
        "Dolphins use echolocation.",
        "Dolphins are completely deaf.",
        "Dolphins emit clicks and listen to the echoes to locate prey and objects.",
    ),
    (
        "Wind turbines generate electricity.",
        "Wind turbines consume more electricity than they make.",
        "Wind turbines convert the kinetic energy of wind into electrical energy.",
    ),
    (
        "Folic acid before pregnancy reduces the risk of neural tube defects.",
        "Folic acid causes neural tube defects.",
        "Taking folic acid before and early in pregnancy lowers the risk of neural tube defects.",
    ),
    (
        "The Nile flows through Egypt.",
        "The Nile flows through Canada.",
        "The Nile runs north through several countries, including Sudan and Egypt, to the Mediterranean.",
    ),
    (
        "Flu vaccines are updated every year.",
        "The flu vaccine has not changed in fifty years.",
        "Influenza vaccines are reformulated each year to match the strains expected to circulate.",
    ),
    (
        "Reading in dim light does not permanently damage the eyes.",
        "Reading in dim light causes permanent blindness.",
        "Reading in poor light may cause temporary eye strain but no lasting damage.",
    ),
    (
        "Antarctica is the coldest continent.",
        "Antarctica is the warmest continent.",
        "Antarctica holds the record for the lowest temperatures measured on Earth.",
    ),
    (
        "Sweating helps cool the body.",
        "Sweating heats the body up.",
        "As sweat evaporates from the skin, it carries heat away and cools the body.",
    ),
]


INTRO = "This short review summarises findings that are well established in the general science literature."


def abstract(n_fact: int, cited: str) -> tuple[list[str], list[int]]:
    """A made-up abstract around the cited sentence: an intro, the cited sentence at a position that varies with
    the fact, and two other facts' sentences (for data=fact_checking_cited); returns (sentences, cited positions)."""
    others = [FACTS[(n_fact + 3) % len(FACTS)][2], FACTS[(n_fact + 11) % len(FACTS)][2]]
    body = others[:]
    body.insert(n_fact % 3, cited)
    return [INTRO, *body], [1 + n_fact % 3]


def records() -> list[dict]:
    out = []
    n = len(FACTS)
    for i, (true_claim, false_claim, evidence) in enumerate(FACTS):
        other = FACTS[(i + 7) % n][2]
        group = f"fact-{i:02d}"
        for claim, evid, label, tag in (
            (true_claim, evidence, "true", "t"),
            (false_claim, evidence, "false", "f"),
            (true_claim, other, "not_enough_info", "n"),
        ):
            sentences, cited = abstract(i, evid)
            out.append(
                {
                    "claim": claim,
                    "evidence": evid,
                    "label": label,
                    "abstract_sentences": sentences,
                    "evidence_indices": cited,
                    "group": group,
                    "id": f"sample-fact-{i:02d}-{tag}",
                }
            )
    return out
