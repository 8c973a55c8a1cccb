"""PII scrubbing: replace e-mails, phone numbers, URLs, card and ID-like numbers with typed placeholders.

Phone numbers are found by Google's libphonenumber (`phonenumbers`), which knows real numbering plans and
so ignores statistics and years; card numbers must pass the Luhn check (`python-stdnum`). E-mails, URLs
and long digit runs are simple enough patterns for regular expressions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import phonenumbers
from stdnum import luhn

EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"')\]]+", re.IGNORECASE)
CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
DIGITS = re.compile(r"\b\d[\d-]*\d\b")
TYPES = ("email", "url", "phone", "card", "id_number")


class PiiScrubber:
    def __init__(self, types: Iterable[str], region: str = "US", placeholder: str = "[{}]", id_min_digits: int = 9):
        # the values were checked where the config block is built (data/settings.py: Pii)
        self.types = list(types)
        self.region = region
        self.placeholder = placeholder
        self.id_min_digits = id_min_digits

    def _tag(self, kind: str) -> str:
        return self.placeholder.format(kind.upper())

    def _phones(self, text: str) -> str:
        spans = [(m.start, m.end) for m in phonenumbers.PhoneNumberMatcher(text, self.region)]
        for start, end in reversed(spans):
            text = text[:start] + self._tag("phone") + text[end:]
        return text

    def _card(self, m: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", m.group())
        # issuer prefixes of the major networks (Amex 34/37, Visa 4, Mastercard 2/5, Discover/UnionPay 6, JCB/Diners 3)
        # keep order numbers that happen to pass the Luhn check from being called cards
        is_card = 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn.is_valid(digits)
        return self._tag("card") if is_card else m.group()

    def _id(self, m: re.Match[str]) -> str:
        return self._tag("id_number") if sum(c.isdigit() for c in m.group()) >= self.id_min_digits else m.group()

    def __call__(self, text: str) -> str:
        # Order matters: URLs and e-mails first (they contain digits), then phones, then the digit runs left.
        if "url" in self.types:
            text = URL.sub(self._tag("url"), text)
        if "email" in self.types:
            text = EMAIL.sub(self._tag("email"), text)
        if "phone" in self.types and any(c.isdigit() for c in text):
            text = self._phones(text)
        if "card" in self.types:
            text = CARD.sub(self._card, text)
        if "id_number" in self.types:
            text = DIGITS.sub(self._id, text)
        return text
