"""Hand-written, illustrative two-choice physical-commonsense items in PIQA's format (not PIQA itself)."""

# goal, correct solution, wrong solution
ITEMS = [
    (
        "Keep a cut apple from turning brown.",
        "Brush the cut side with lemon juice.",
        "Brush the cut side with cooking oil and leave it in the sun.",
    ),
    (
        "Open a tight jar lid.",
        "Run the lid under hot water for a minute, then twist.",
        "Put the jar in the freezer for a minute, then twist.",
    ),
    ("Dry wet shoes faster.", "Stuff them with newspaper and replace it when damp.", "Wrap them in plastic wrap overnight."),
    (
        "Remove a splinter from your finger.",
        "Clean the area and pull it out with sterilised tweezers.",
        "Push it deeper with a pin so it dissolves.",
    ),
    ("Make ice cubes clearer.", "Boil the water, let it cool, then freeze it.", "Add salt to the water before freezing it."),
    ("Stop a door from squeaking.", "Apply a little oil to the hinges.", "Paint over the hinges with water."),
    (
        "Cool a drink quickly.",
        "Wrap it in a wet paper towel and put it in the freezer.",
        "Wrap it in a dry wool sock and leave it on the counter.",
    ),
    (
        "Keep bread fresh for longer.",
        "Store it in a sealed bag at room temperature or freeze it.",
        "Leave it uncovered on a sunny windowsill.",
    ),
    (
        "Find a small screw dropped on the carpet.",
        "Cover a vacuum nozzle with a stocking and vacuum the area.",
        "Pour water on the carpet so the screw floats.",
    ),
    (
        "Clean a microwave easily.",
        "Heat a bowl of water with lemon for a few minutes, then wipe.",
        "Heat an empty metal bowl for a few minutes, then wipe.",
    ),
    (
        "Prevent a pot from boiling over.",
        "Lay a wooden spoon across the top of the pot.",
        "Put the lid on tightly and turn the heat up.",
    ),
    (
        "Sharpen a pencil without a sharpener.",
        "Carefully shave the wood with a knife, away from you.",
        "Rub the tip on a pillow until pointed.",
    ),
    (
        "Get rid of a bad smell in the fridge.",
        "Place an open box of baking soda inside.",
        "Place an open bottle of vinegar on the stove.",
    ),
    (
        "Carry many grocery bags at once.",
        "Hook the handles over a sturdy carabiner or towel.",
        "Tie all the bags to your shoelaces.",
    ),
    ("Keep a cutting board from slipping.", "Put a damp towel under it.", "Put a few marbles under it."),
    (
        "Soften hard brown sugar.",
        "Seal it in a container with a slice of bread overnight.",
        "Spread it on a tray in the freezer overnight.",
    ),
    (
        "Unclog a slow bathroom sink.",
        "Remove hair from the drain stopper and flush with hot water.",
        "Pour in wet concrete to push the clog through.",
    ),
    (
        "Make a candle burn longer.",
        "Put it in the freezer for a few hours before lighting.",
        "Dip the wick in water before lighting.",
    ),
    ("Mark the end of a roll of tape.", "Fold the end over a paperclip.", "Cut the roll in half."),
    ("Protect a phone screen at the beach.", "Keep it in a sealed plastic bag.", "Bury it in the sand."),
    (
        "Reheat pizza without making it soggy.",
        "Warm it in a pan on the stove.",
        "Warm it in a covered bowl of water in the microwave.",
    ),
    (
        "Separate an egg yolk.",
        "Crack the egg and pass the yolk between the shell halves.",
        "Shake the whole egg hard before cracking it.",
    ),
    ("Hang a picture straight.", "Use a level or a phone level app.", "Tilt your head until it looks right."),
    ("Keep a paint brush from drying out between coats.", "Wrap it in plastic wrap.", "Leave it in the sun on a paper towel."),
    (
        "Remove a stuck ring from a finger.",
        "Lubricate the finger with soap and twist the ring off.",
        "Soak the hand in hot water for an hour.",
    ),
    (
        "Stop glasses from fogging up.",
        "Rub a little dish soap on the lenses and wipe clean.",
        "Breathe on the lenses before going outside.",
    ),
    ("Store extra cables neatly.", "Roll each cable and hold it with a toilet-paper tube.", "Knot all cables together tightly."),
    ("Make a quick phone speaker louder.", "Place the phone in an empty cup or bowl.", "Place the phone under a pillow."),
    ("Protect plants from frost overnight.", "Cover them with a cloth sheet.", "Water them with ice cubes."),
    ("Clean a cheese grater.", "Grate a raw potato, then rinse.", "Grate a block of butter, then rinse."),
    ("Keep ants out of a pet bowl.", "Set the bowl in a shallow dish of water.", "Sprinkle sugar around the bowl."),
    ("Thaw frozen meat safely.", "Leave it in the fridge overnight.", "Leave it on the counter in the sun all day."),
    ("Make a zipper slide easily.", "Rub a graphite pencil along the teeth.", "Rub a wet sponge along the teeth."),
    (
        "Prevent a sandwich from getting soggy.",
        "Put a lettuce leaf between bread and wet fillings.",
        "Pour the sauce on the bread the night before.",
    ),
    (
        "Find the end of a roll of clear tape.",
        "Run a fingernail around the roll until it catches.",
        "Shake the roll until the end falls out.",
    ),
    (
        "Light a candle deep in a jar.",
        "Light a piece of dry spaghetti and use it as a long match.",
        "Drop a lit match into the jar from above.",
    ),
    ("Keep a wooden spoon from smelling.", "Wash and dry it promptly, and oil it occasionally.", "Soak it in water for a week."),
    ("Cut a cake cleanly.", "Dip the knife in hot water and wipe it between cuts.", "Freeze the knife and cut quickly."),
    ("Keep a bike chain running smoothly.", "Clean it and apply bike chain lubricant.", "Wash it with sugary soda."),
    ("Dry herbs for later.", "Hang small bunches upside down in a dry, airy place.", "Seal fresh herbs in a jar with water."),
]


SPLIT = {"validation": 20, "test": 20, "train": 0}


def records() -> list[dict]:
    out = []
    for i, (goal, right, wrong) in enumerate(ITEMS):
        answer = i % 2  # alternate the position of the right answer
        choices = [wrong, right] if answer else [right, wrong]
        out.append({"question": goal, "choices": choices, "answer_index": answer, "id": f"sample-piqa-{i:02d}"})
    return out
