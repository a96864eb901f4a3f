"""Public names of contributors: what makes two names read as the same person.

A name is shown on the credits page and in every contributed invention's provenance, so a
sign-up must not take a name that looks like someone else's ("Ada" and "Аda" with a
Cyrillic A, "ada" in full width, "A d a") or like the site speaking ("admin"). The skeleton
follows Unicode TR39's idea (fold each character to a prototype it is confused with) with a
small table of the confusables that matter in names, plus case and width folding; it errs
on the side of refusing, since a refused sign-up only has to pick another name.
"""

import unicodedata

# Letters of other scripts that render like a Latin letter, and Latin letters and digits
# that render like each other (after case folding).
_CONFUSABLES = str.maketrans(
    {
        # Cyrillic
        "а": "a",
        "в": "b",
        "е": "e",
        "ё": "e",
        "к": "k",
        "м": "m",
        "н": "h",
        "о": "o",
        "р": "p",
        "с": "c",
        "т": "t",
        "у": "y",
        "х": "x",
        "ѕ": "s",
        "і": "l",
        "ї": "l",
        "ј": "j",
        "ԁ": "d",
        "ԛ": "q",
        "ԝ": "w",
        "ү": "y",
        "һ": "h",
        "ɡ": "g",
        "ӏ": "l",
        # Greek
        "α": "a",
        "β": "b",
        "ε": "e",
        "η": "n",
        "ι": "l",
        "κ": "k",
        "ν": "v",
        "ο": "o",
        "ρ": "p",
        "τ": "t",
        "υ": "u",
        "χ": "x",
        "ω": "w",
        "ϲ": "c",
        "ϳ": "j",
        "μ": "u",
        # Latin look-alikes
        "ɑ": "a",
        "ɩ": "l",
        "ı": "l",
        "ł": "l",
        "ø": "o",
        "đ": "d",
        "ħ": "h",
        "0": "o",
        "1": "l",
        "i": "l",
        "|": "l",
        "!": "l",
        "5": "s",
        "$": "s",
        "@": "a",
    }
)
# fmt: on
_PAIRS = (("rn", "m"), ("vv", "w"), ("cl", "d"))

# Names that would read as the site itself speaking.
# fmt: off
RESERVED = (
    "admin", "administrator", "root", "staff", "support", "moderator", "system", "official",
    "allthepatents", "all the patents", "anonymous", "nobody", "null", "contributor",
)
# fmt: on
# Reserved words that also may not appear inside a name ("Admin team", "the_root").
RESERVED_INSIDE = ("admin", "allthepatents", "moderator")


def name_skeleton(name: str) -> str:
    """What ``name`` looks like, for telling names apart: compatibility forms (full width,
    ligatures) folded, case folded, accents and every mark, space, punctuation and invisible
    character dropped, confusable letters mapped to one prototype."""
    text = unicodedata.normalize("NFKC", name).casefold().translate(_CONFUSABLES)
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if unicodedata.category(c)[0] in "LN")
    text = text.translate(_CONFUSABLES)  # letters freed of their accents
    for pair, prototype in _PAIRS:
        text = text.replace(pair, prototype)
    return text


_RESERVED_SKELETONS = {name_skeleton(n) for n in RESERVED}
_RESERVED_INSIDE_SKELETONS = tuple(name_skeleton(n) for n in RESERVED_INSIDE)


def name_is_reserved(name: str) -> bool:
    skeleton = name_skeleton(name)
    if not skeleton:
        return True  # nothing a reader could tell apart
    return skeleton in _RESERVED_SKELETONS or any(
        word in skeleton for word in _RESERVED_INSIDE_SKELETONS
    )
