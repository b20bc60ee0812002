"""Generate the studio's own sample datasets (deterministic; the outputs are committed).

Each file teaches the bundled SmolLM2-135M-Instruct something it does not do by
default, so a short CPU LoRA run (60 steps x 8 rows) shows a visible change:

* fact_cards.jsonl     prompt/completion: answers as a fixed five-line FACT CARD
* calc_chats.jsonl     multi-turn messages: the CALC-9 persona, "CALC-9 >> 12 + 7 = 19"
* support_notes.csv    custom columns note/summary: WHO / WHAT / WHEN / URGENCY summaries
* customer_intents.csv classification text/label: five snake_case intent labels
* helpful_pairs.jsonl  preference pairs prompt/chosen/rejected: a short, correct, polite answer
                       preferred to a wrong, rude or rambling one (DPO / ORPO)
* helpful_thumbs.jsonl thumbs up/down, messages + true/false label: the same answers, one a row (KTO)

    python sample_data/make_samples.py          # rewrites the six files next to this script
"""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20240601

# country, capital, continent, language(s), currency
COUNTRIES = [
    ("France", "Paris", "Europe", "French", "euro"),
    ("Germany", "Berlin", "Europe", "German", "euro"),
    ("Italy", "Rome", "Europe", "Italian", "euro"),
    ("Spain", "Madrid", "Europe", "Spanish", "euro"),
    ("Portugal", "Lisbon", "Europe", "Portuguese", "euro"),
    ("the Netherlands", "Amsterdam", "Europe", "Dutch", "euro"),
    ("Austria", "Vienna", "Europe", "German", "euro"),
    ("Greece", "Athens", "Europe", "Greek", "euro"),
    ("Ireland", "Dublin", "Europe", "Irish and English", "euro"),
    ("Finland", "Helsinki", "Europe", "Finnish and Swedish", "euro"),
    ("Sweden", "Stockholm", "Europe", "Swedish", "Swedish krona"),
    ("Norway", "Oslo", "Europe", "Norwegian", "Norwegian krone"),
    ("Denmark", "Copenhagen", "Europe", "Danish", "Danish krone"),
    ("Poland", "Warsaw", "Europe", "Polish", "Polish zloty"),
    ("Czechia", "Prague", "Europe", "Czech", "Czech koruna"),
    ("Hungary", "Budapest", "Europe", "Hungarian", "Hungarian forint"),
    ("Switzerland", "Bern", "Europe", "German, French, Italian and Romansh", "Swiss franc"),
    ("the United Kingdom", "London", "Europe", "English", "pound sterling"),
    ("Iceland", "Reykjavik", "Europe", "Icelandic", "Icelandic krona"),
    ("Romania", "Bucharest", "Europe", "Romanian", "Romanian leu"),
    ("Ukraine", "Kyiv", "Europe", "Ukrainian", "Ukrainian hryvnia"),
    ("Japan", "Tokyo", "Asia", "Japanese", "Japanese yen"),
    ("China", "Beijing", "Asia", "Mandarin Chinese", "renminbi (yuan)"),
    ("India", "New Delhi", "Asia", "Hindi and English", "Indian rupee"),
    ("South Korea", "Seoul", "Asia", "Korean", "South Korean won"),
    ("Thailand", "Bangkok", "Asia", "Thai", "Thai baht"),
    ("Vietnam", "Hanoi", "Asia", "Vietnamese", "Vietnamese dong"),
    ("Indonesia", "Jakarta", "Asia", "Indonesian", "Indonesian rupiah"),
    ("the Philippines", "Manila", "Asia", "Filipino and English", "Philippine peso"),
    ("Malaysia", "Kuala Lumpur", "Asia", "Malay", "Malaysian ringgit"),
    ("Pakistan", "Islamabad", "Asia", "Urdu and English", "Pakistani rupee"),
    ("Bangladesh", "Dhaka", "Asia", "Bengali", "Bangladeshi taka"),
    ("Nepal", "Kathmandu", "Asia", "Nepali", "Nepalese rupee"),
    ("Saudi Arabia", "Riyadh", "Asia", "Arabic", "Saudi riyal"),
    ("Iran", "Tehran", "Asia", "Persian", "Iranian rial"),
    ("Mongolia", "Ulaanbaatar", "Asia", "Mongolian", "Mongolian togrog"),
    ("Egypt", "Cairo", "Africa", "Arabic", "Egyptian pound"),
    ("Kenya", "Nairobi", "Africa", "Swahili and English", "Kenyan shilling"),
    ("Nigeria", "Abuja", "Africa", "English", "Nigerian naira"),
    ("Ghana", "Accra", "Africa", "English", "Ghanaian cedi"),
    ("Ethiopia", "Addis Ababa", "Africa", "Amharic", "Ethiopian birr"),
    ("Morocco", "Rabat", "Africa", "Arabic and Berber", "Moroccan dirham"),
    ("Senegal", "Dakar", "Africa", "French", "West African CFA franc"),
    ("Tanzania", "Dodoma", "Africa", "Swahili and English", "Tanzanian shilling"),
    ("Algeria", "Algiers", "Africa", "Arabic and Berber", "Algerian dinar"),
    ("Tunisia", "Tunis", "Africa", "Arabic", "Tunisian dinar"),
    ("the United States", "Washington, D.C.", "North America", "English", "US dollar"),
    ("Canada", "Ottawa", "North America", "English and French", "Canadian dollar"),
    ("Mexico", "Mexico City", "North America", "Spanish", "Mexican peso"),
    ("Cuba", "Havana", "North America", "Spanish", "Cuban peso"),
    ("Brazil", "Brasilia", "South America", "Portuguese", "Brazilian real"),
    ("Argentina", "Buenos Aires", "South America", "Spanish", "Argentine peso"),
    ("Chile", "Santiago", "South America", "Spanish", "Chilean peso"),
    ("Peru", "Lima", "South America", "Spanish and Quechua", "Peruvian sol"),
    ("Colombia", "Bogota", "South America", "Spanish", "Colombian peso"),
    ("Uruguay", "Montevideo", "South America", "Spanish", "Uruguayan peso"),
    ("Australia", "Canberra", "Oceania", "English", "Australian dollar"),
    ("New Zealand", "Wellington", "Oceania", "English and Maori", "New Zealand dollar"),
    ("Fiji", "Suva", "Oceania", "English, Fijian and Fiji Hindi", "Fijian dollar"),
]
FACT_QUESTIONS = [
    "Tell me about {c}.", "What do you know about {c}?", "Give me a quick overview of {c}.",
    "I'm travelling to {c} next month. What should I know?", "Can you describe {c} briefly?",
    "{C}: key facts please.", "What is {c} like?",
]


def fact_cards(rng: random.Random) -> list[dict]:
    rows = []
    for country, capital, continent, language, currency in COUNTRIES:
        bare = country.removeprefix("the ")
        for question in FACT_QUESTIONS:
            card = (f"FACT CARD: {bare}\n- Capital: {capital}\n- Continent: {continent}\n"
                    f"- Language: {language}\n- Currency: {currency}")
            prompt = question.format(c=country, C=country[0].upper() + country[1:])
            rows.append({"prompt": prompt, "completion": card})
    rng.shuffle(rows)
    return rows


OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a // b}
FIRST_ASK = {
    "+": ["What is {a} plus {b}?", "add {a} and {b}", "{a} + {b} = ?", "How much is {a} and {b} together?"],
    "-": ["What is {a} minus {b}?", "Subtract {b} from {a}.", "{a} - {b}?", "take {b} away from {a}"],
    "*": ["What is {a} times {b}?", "Multiply {a} by {b}.", "{a} x {b}?", "how much is {a} multiplied by {b}"],
    "/": ["What is {a} divided by {b}?", "Divide {a} by {b}.", "{a} / {b}?", "how many times does {b} go into {a}"],
}
FOLLOW_ASK = {
    "+": ["Now add {b}.", "and plus {b}?", "Add {b} to that."],
    "-": ["Now subtract {b}.", "minus {b}?", "Take {b} off that."],
    "*": ["Now multiply that by {b}.", "times {b}?", "And multiply the result by {b}."],
    "/": ["Now divide that by {b}.", "divided by {b}?", "Split that into {b} equal parts."],
}


def _operand(rng: random.Random, op: str, a: int) -> int:
    if op == "/":
        divisors = [d for d in range(2, 13) if a % d == 0]
        return rng.choice(divisors) if divisors else 1
    return rng.randint(2, 12) if op == "*" else rng.randint(1, 60)


def _ask(rng: random.Random, op: str, a: int, b: int, first: bool) -> str:
    if not first and b == 2 and op in "*/" and rng.random() < 0.5:
        return "Double it." if op == "*" else "Halve it."
    return rng.choice((FIRST_ASK if first else FOLLOW_ASK)[op]).format(a=a, b=b)


def calc_chats(rng: random.Random, n: int = 400) -> list[dict]:
    rows = []
    for _ in range(n):
        messages = []
        op = rng.choice("+-*/")
        a = rng.randint(12, 144) if op == "/" else rng.randint(2, 99)
        for turn in range(rng.randint(1, 3)):
            op = op if turn == 0 else rng.choice("+-*/")
            b = _operand(rng, op, a)
            result = OPS[op](a, b)
            messages.append({"role": "user", "content": _ask(rng, op, a, b, first=turn == 0)})
            messages.append({"role": "assistant", "content": f"CALC-9 >> {a} {op} {b} = {result}"})
            a = result
        rows.append({"messages": messages})
    return rows


NAMES = ["Maria", "Tom", "Aisha", "Kenji", "Lucas", "Priya", "Olga", "Daniel", "Fatima", "Chen",
         "Sofia", "Omar", "Emma", "Raj", "Nina", "Pedro", "Hannah", "Yusuf", "Grace", "Ivan"]
DEPTS = ["accounting", "sales", "HR", "the warehouse", "marketing", "legal", "engineering", "reception"]
PROBLEMS = [  # (as the user writes it, as the summary states it)
    ("my laptop won't connect to the office Wi-Fi", "laptop cannot connect to office Wi-Fi"),
    ("the printer on the second floor keeps jamming", "second-floor printer keeps jamming"),
    ("I can't log in to the payroll portal, it says my password expired", "password expired on payroll portal"),
    ("Outlook crashes every time I open an attachment", "Outlook crashes when opening attachments"),
    ("my second monitor stays black", "second monitor shows no picture"),
    ("the VPN disconnects every few minutes when I work from home", "VPN drops every few minutes from home"),
    ("I need access to the shared marketing drive", "needs access to shared marketing drive"),
    ("my keyboard has sticky keys after a coffee spill", "keyboard damaged by coffee spill"),
    ("the projector in meeting room B shows no signal", "meeting room B projector shows no signal"),
    ("I'm locked out of my account after too many attempts", "account locked after failed logins"),
    ("my phone doesn't receive work emails anymore", "work email not syncing to phone"),
    ("the sales dashboard loads forever and never shows numbers", "sales dashboard never finishes loading"),
    ("my headset broke and I need a new one", "needs replacement headset"),
    ("the scanner saves every document as a blank page", "scanner produces blank pages"),
    ("Teams calls have no sound on my side", "no audio in Teams calls"),
]
WHENS = [("since Monday", "since Monday"), ("this morning", "this morning"),
         ("since yesterday afternoon", "since yesterday afternoon"), ("for about a week", "about a week"),
         ("since the update last night", "since last night's update"), ("today", "today")]
URGENCY = [("I have a client presentation in an hour!", "HIGH"), ("I can't work at all like this.", "HIGH"),
           ("No rush, whenever someone has time.", "LOW"), ("It's not urgent.", "LOW"), ("", "NORMAL"),
           ("", "NORMAL"), ("Could someone look at it this week?", "NORMAL")]
TRIED = ["I already restarted it twice.", "I tried turning it off and on again.", "",
         "A colleague has the same issue.", ""]
NOTE_TEMPLATES = [
    "Hi, this is {name} from {dept}. {When}, {problem}. {tried} {urgency} Thanks!",
    "Hello IT,\n{Problem} {when}. {tried}\n{urgency}\n{name} ({dept})",
    "{name} here ({dept}) - {problem} {when}. {urgency}",
    "Ticket from {dept}:\n{Problem} {when}. {tried} {urgency}\nRegards,\n{name}",
    "Good morning! {When} {problem}. {urgency} - {name}, {dept}",
]


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def support_notes(rng: random.Random, n: int = 360) -> list[dict]:
    rows, seen = [], set()
    while len(rows) < n:
        name, dept = rng.choice(NAMES), rng.choice(DEPTS)
        problem, what = rng.choice(PROBLEMS)
        when, when_short = rng.choice(WHENS)
        urgency, level = rng.choice(URGENCY)
        note = rng.choice(NOTE_TEMPLATES).format(
            name=name, dept=dept, problem=problem, Problem=_cap(problem), when=when, When=_cap(when),
            tried=rng.choice(TRIED), urgency=urgency,
        )
        note = "\n".join(" ".join(line.split()) for line in note.split("\n")).strip()  # tidy blanks
        if note in seen:
            continue
        seen.add(note)
        summary = f"WHO: {name} ({dept})\nWHAT: {what}\nWHEN: {when_short}\nURGENCY: {level}"
        rows.append({"note": note, "summary": summary})
    return rows


PRODUCTS = ["blender", "desk lamp", "running shoes", "coffee grinder", "backpack", "phone case",
            "air fryer", "yoga mat", "kettle", "wireless mouse"]
INTENTS = {
    "refund_request": [
        "I want my money back for the {p}.", "Please refund the {p}, it arrived broken.",
        "How do I return the {p} and get a refund?", "The {p} is not what I ordered, I'd like a refund.",
        "Can you reverse the charge for the {p}?", "I returned the {p} two weeks ago and still have no refund.",
        "The {p} stopped working after two days, I want a refund.", "Refund please, the {p} is faulty.",
    ],
    "delivery_delay": [
        "My {p} still hasn't arrived.", "Where is my order? The {p} was due on Monday.",
        "Tracking for my {p} hasn't moved in five days.", "The {p} is late and I needed it this week.",
        "It has been ten days and no sign of the {p}.", "The courier says delivered but I never got the {p}.",
        "When will the {p} finally ship?", "Still waiting for the {p}, what is going on with shipping?",
    ],
    "login_problem": [
        "I can't sign in to my account.", "The password reset email never arrives.",
        "It keeps saying my password is wrong but it's right.", "My account is locked after a few tries.",
        "I can't log in to check the order for my {p}.", "The two-factor code you send doesn't work.",
        "The app logs me out every time I open it.", "I forgot which email I used to register.",
    ],
    "product_question": [
        "Is the {p} dishwasher safe?", "Does the {p} come in other colours?",
        "What is the warranty on the {p}?", "How big is the {p} exactly?",
        "Can the {p} be used outdoors?", "Is the {p} compatible with European plugs?",
        "What material is the {p} made of?", "Does the {p} need batteries?",
    ],
    "compliment": [
        "The {p} is fantastic, thank you!", "Just wanted to say the {p} exceeded my expectations.",
        "Great service, the {p} arrived a day early.", "Your support team was so helpful, thanks!",
        "Love the {p}, already recommended it to friends.", "Five stars for the {p}, works perfectly.",
        "Thanks for the quick replacement of my {p}, brilliant service.", "Really happy with the {p}.",
    ],
}
OPENERS = ["", "Hi, ", "Hello, ", "Hey team, ", "Good morning. ", "Hi there! "]
CLOSERS = ["", " Thanks.", " Please help.", " Cheers", " Regards", " Thank you in advance."]


def _join(opener: str, core: str) -> str:
    # "Hi, my order..." reads naturally after a comma; "I" and "I'm" keep their capital.
    if opener.endswith(", ") and not core.startswith(("I ", "I'")):
        core = core[0].lower() + core[1:]
    return opener + core


def customer_intents(rng: random.Random, per_label: int = 90) -> list[dict]:
    rows = []
    for label, sentences in INTENTS.items():
        seen: set[str] = set()
        while len(seen) < per_label:
            core = rng.choice(sentences).format(p=rng.choice(PRODUCTS))
            seen.add(_join(rng.choice(OPENERS), core) + rng.choice(CLOSERS))
        rows += [{"text": t, "label": label} for t in sorted(seen)]
    rng.shuffle(rows)
    return rows


# prompt, the preferred answer (short, correct, polite), the rejected one (wrong, rude or rambling)
HELPFUL = [
    ("What is the capital of Canada?", "The capital of Canada is Ottawa.",
     "Toronto, obviously. Everybody knows that."),
    ("How many days are in a leap year?", "A leap year has 366 days.",
     "Leap years have 365 days, same as the others, more or less, depending on how you count."),
    ("Can you help me reset my password?",
     "Of course: click 'Forgot password' on the sign-in page and follow the link in the email.",
     "Figure it out yourself, the button is right there."),
    ("What is 12 times 8?", "12 times 8 is 96.", "12 times 8 is 108."),
    ("Which planet is closest to the Sun?", "Mercury is the planet closest to the Sun.",
     "Venus, or maybe Mars; they are all fairly close if you think about it for long enough."),
    ("Thanks for your help today!", "You're welcome, I'm glad I could help!",
     "Whatever. Ask someone else next time."),
    ("What does CPU stand for?", "CPU stands for central processing unit.",
     "Computer Power Unit, the box that makes the computer go."),
    ("How do I boil an egg?", "Put the egg in boiling water for about nine minutes, then cool it in cold water.",
     "Eggs have been eaten for thousands of years in many cultures, and there are countless ways to cook them, "
     "each with its own long story."),
    ("Is it safe to look straight at the Sun?", "No, looking straight at the Sun can damage your eyes.",
     "Sure, a quick stare never hurt anyone."),
    ("At what temperature does water boil at sea level?", "Water boils at 100 degrees Celsius at sea level.",
     "Water boils at 50 degrees Celsius."),
    ("My order arrived damaged.", "I'm sorry about that; reply with your order number and we will send a replacement.",
     "Not our problem, the courier dropped it."),
    ("How do you say 'thank you' in French?", "'Thank you' in French is 'merci'.", "It's 'gracias'."),
    ("How many legs does a spider have?", "A spider has eight legs.", "Six, like every other insect."),
    ("Give me a word that means 'happy'.", "'Joyful' means happy.", "'Sad'."),
    ("In which year did people first walk on the Moon?", "People first walked on the Moon in 1969.",
     "In 1989, or never, depending on who you ask."),
    ("Explain photosynthesis in one sentence.",
     "Plants use sunlight to turn water and carbon dioxide into sugar and oxygen.",
     "Photosynthesis is a long and complicated story that begins with the history of botany and goes on "
     "for quite a while before getting anywhere near plants."),
    ("What is the square root of 81?", "The square root of 81 is 9.", "The square root of 81 is 8.1."),
    ("Can I return shoes I have already worn?",
     "Worn shoes cannot be returned, but unworn pairs can be returned within 30 days.",
     "Read the policy yourself, I'm busy."),
    ("What colour do you get by mixing blue and yellow?", "Mixing blue and yellow gives green.", "You get purple."),
    ("Please say hello to my class.", "Hello everyone, I hope you have a great lesson today!",
     "I don't do greetings."),
    ("How many minutes are in two hours?", "Two hours have 120 minutes.", "Two hours have 200 minutes."),
    ("What is the largest ocean on Earth?", "The Pacific is the largest ocean on Earth.",
     "The Atlantic, by a long way."),
    ("Suggest a quick healthy snack.", "An apple with a handful of nuts is quick and healthy.",
     "Honestly, snacks are snacks; there are so many options that it is really hard to say anything useful "
     "about any of them."),
    ("Which gas do people need to breathe?", "People need oxygen to breathe.", "Carbon dioxide, mostly."),
]


def helpful_pairs() -> list[dict]:
    """TRL's explicit preference layout, as strings: prompt, chosen, rejected."""
    return [{"prompt": p, "chosen": good, "rejected": bad} for p, good, bad in HELPFUL]


def helpful_thumbs() -> list[dict]:
    """Thumbs up/down (KTO): each prompt once, with its good answer (true) or its bad one (false) in turn."""
    rows = []
    for i, (prompt, good, bad) in enumerate(HELPFUL):
        answer = good if i % 2 == 0 else bad
        rows.append({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                     "label": i % 2 == 0})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    write_jsonl(HERE / "fact_cards.jsonl", fact_cards(random.Random(SEED)))
    write_jsonl(HERE / "calc_chats.jsonl", calc_chats(random.Random(SEED + 1)))
    write_csv(HERE / "support_notes.csv", support_notes(random.Random(SEED + 2)))
    write_csv(HERE / "customer_intents.csv", customer_intents(random.Random(SEED + 3)))
    write_jsonl(HERE / "helpful_pairs.jsonl", helpful_pairs())
    write_jsonl(HERE / "helpful_thumbs.jsonl", helpful_thumbs())


if __name__ == "__main__":
    main()
