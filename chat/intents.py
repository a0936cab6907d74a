"""Rule-based intent and entity extraction for customer-service messages.

A message that names something the chat can do (cancel, change, address change, expedite, a
ticket, a hand-over to a person) is a *request* only when it asks for it. The same verb in a
question about a state ("was SO-1 cancelled?", "did the customer cancel it or not?"), under a
negation ("don't cancel SO-1, just tell me its status") or in a question about what is allowed
("can I still cancel it?") is answered, never acted on. Even a request is only restated: the
service acts after an explicit yes in the next message (:func:`is_confirmation`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, get_args

Intent = Literal[
    "status",
    "why_split",
    "why_held",
    "why_late",
    "why",
    "change",
    "cancel",
    "address_change",
    "expedite",
    "handover",
    "availability",
    "product",
    "sop",
    "ticket",
    "greeting",
    "confirm",
    "decline",
    "unknown",
]
INTENTS: tuple[Intent, ...] = get_args(Intent)
ActionIntent = Literal["cancel", "change", "address_change", "expedite", "ticket", "handover"]
ACTION_INTENTS: frozenset[str] = frozenset(get_args(ActionIntent))
# How a message that names an action relates to it.
Mode = Literal["request", "question", "state", "negated"]

_ORDER = re.compile(r"\bS[O0][-_ –]?#?(\d{1,12})\b", re.IGNORECASE)
# An order id typed with letters for digits ("SO-100O3", "SO-1OO003"): kept as typed, for "did you mean".
_LOOSE_ORDER = re.compile(r"\bS[O0][-_ –]?#?((?=[0-9OoIl]*\d)(?=[0-9]*[OoIl])[0-9OoIl]{3,12})\b", re.IGNORECASE)
_BARE_ORDER = re.compile(r"\border\s*(?:no\.?|number|#)?\s*#?\s*(\d{3,12})\b|(?<![\w#])#\s?(\d{5,12})\b", re.I)
_SKU = re.compile(r"\bSKU[-_ ]?(\d{1,12})\b", re.IGNORECASE)
_LINE = re.compile(r"\bline\s*#?\s*(\d{1,4})\b", re.IGNORECASE)
_QTY = re.compile(
    r"\b(?:to|into|make it|only|qty|quantity(?: of)?|just)\s+(\d{1,7})(?:\s*(?:units?|pcs|pieces|x))?\b", re.I
)
_REGION = re.compile(r"\b([A-Z]{2}-[A-Z]{1,3})\b")
_OTHER_LINE = re.compile(r"\b(other|second|remaining|rest of the)\s+(line|item|lines|items)\b", re.IGNORECASE)

# Text that tries to change the rules rather than ask a question. Matching it never widens
# anything (code decides what executes); it only makes the answer a refusal.
_INJECTION = re.compile(
    r"ignore (?:all |your |any |the |previous |prior |above )*(?:rules|instructions|policy|policies|guidelines)"
    r"|disregard (?:all |your |the |previous )*(?:rules|instructions|policy)"
    r"|system prompt|you are now|act as (?:an? )?admin|developer mode|jailbreak"
    r"|for (?:every ?one|everybody|all customers|all orders)|\ball (?:the )?orders\b|every order"
    r"|override (?:the )?(?:policy|gate|review)|without (?:review|approval)",
    re.IGNORECASE,
)
_GREETING = re.compile(
    r"^\s*(?:hi|hello|hey|good (?:morning|afternoon|evening)|thanks|thank you|cheers)\b[\s!.,a-z']*$", re.IGNORECASE
)
_SOP_WORDS = re.compile(
    r"\b(?:policy|policies|procedure|sop|guideline|process for|what do we do|how do we|how should we|"
    r"damaged|damage|refund|return|returns|warranty|lost (?:parcel|package|shipment))\b",
    re.IGNORECASE,
)
_POLICY_NOUN = re.compile(r"\b(?:polic(?:y|ies)|procedures?|sops?|guidelines?|rules)\b", re.IGNORECASE)

# ---------------------------------------------------------------------------- actions

# Each action's words. Order matters where two match: the first listed wins.
_ACTION_WORDS: tuple[tuple[ActionIntent, re.Pattern[str]], ...] = (
    (
        "handover",
        re.compile(
            r"\b(?:talk|speak|chat)\s+(?:to|with)\b|\b(?:connect|transfer|put)\s+me\b|\bhumans?\b"
            r"|\b(?:real|live|actual)\s+(?:person|agent|human|people)\b"
            r"|\b(?:call|phone|ring)\s+me\b"
            r"|\b(?:want|need|get|have|reach)\s+(?:me\s+)?(?:a|an|the|some|your)?\s*(?:person|agent|representative"
            r"|rep|supervisor"
            r"|manager|operator|colleague|someone)\b|\bhand (?:me|this|it) over\b",
            re.IGNORECASE,
        ),
    ),
    ("ticket", re.compile(r"\btickets?\b|\bopen (?:a |an )?case\b|\bfile (?:a |an )?(?:claim|case)\b", re.I)),
    (
        "address_change",
        re.compile(
            r"\baddress\b|\bdeliver(?:ed|y)? (?:it |this |them )?(?:to|at) (?:a |the |my |our )?"
            r"(?:different|new|another|other)\b|\bship (?:it |this |them )?to\b",
            re.I,
        ),
    ),
    (
        "change",
        re.compile(
            r"\b(?:change[sd]?|changing|modif(?:y|ied|ying)|reduc(?:e|ed|ing)|increas(?:e|ed|ing)|lower(?:ed|ing)?"
            r"|raise|amend(?:ed)?|adjust(?:ed)?|decreas(?:e|ed|ing)|edit)\b"
            r"|\bupdate (?:the |my |its )?(?:qty|quantity|line|units)\b|\bmake (?:it|line \d+|that) \d+\b"
            r"|\b(?:cancel|remove|drop|delete) line\b|\bonly (?:want|need) \d+\b",
            re.IGNORECASE,
        ),
    ),
    (
        "cancel",
        re.compile(
            r"\b(?:cancel(?:l?ing|l?ed|lations?|s)?|cancell|cancle[ds]?|cansel(?:led)?|canel)\b|\buncancel", re.I
        ),
    ),
    (
        "expedite",
        re.compile(
            r"\bexpedit\w*|\brush(?:ed|ing)?\b|\bspeed (?:it |this |that |things |the \w+ )?up\b|\bhurry\b"
            r"|\bprioriti[sz]\w*|\b(?:express|priority|faster|quicker|overnight|next[- ]day) (?:shipping|delivery)\b"
            r"|\bupgrade (?:the |my )?(?:shipping|delivery)\b"
            r"|\b(?:get|ship|send|deliver|need) (?:it|this|that|them|ORDER)? ?(?:out )?(?:faster|sooner|quicker|asap"
            r"|urgently)\b|\b(?:deliver(?:ed|y)?|ship(?:ped|ping)?|sen[dt]|arriv(?:e|al)|here) (?:\w+ )?(?:faster"
            r"|sooner|quicker|earlier)\b",
            re.IGNORECASE,
        ),
    ),
    ("ticket", re.compile(r"\bcomplain\w*|\bescalat\w*|\braise (?:a |an )?(?:issue|claim)\b", re.IGNORECASE)),
)

# A negation just before the action word, in the same clause ("don't cancel", "no need to expedite").
_NEGATED_BEFORE = re.compile(
    r"\b(?:don'?t|do not|dont|not|never|no need to|no need for|without|won'?t|shouldn'?t|should not|stop|avoid"
    r"|rather not|no longer want to|never ?mind(?: the)?|forget(?: about)?(?: the)?|hold off(?: on)?"
    r"|instead of|rather than)\W+(?:\w+\W+){0,3}$",
    re.IGNORECASE,
)
_CLAUSE_BREAK = re.compile(r"[.;!?]|,\s*(?:but|just|and|only|instead|please)\b|\b(?:but|instead|just)\b", re.I)
_KNOWING = re.compile(
    r"\b(?:tell me|let me know|check(?:ing)?|see|know|find out|confirm|verify|wonder(?:ing)?|curious|asking|ask"
    r"|sure)\s+(?:if|whether)\b|\bwhether\b"
    r"|\b(?:confirm|verify|check)(?: that| for me that)?\s+(?:ORDER|it|my order|the order|this order)\s+"
    r"(?:is|was|has|got|'s)\b",
    re.IGNORECASE,
)
_OR_NOT = re.compile(r"\bor not\b", re.IGNORECASE)
_ASK_YOU = re.compile(
    r"\b(?:can|could|would|will|can't|cannot|won't)\s+(?:you|u|someone|somebody)\s+(?:please\s+|kindly\s+|just\s+"
    r"|maybe\s+|possibly\s+)?(?:\w+\s+){0,1}$",
    re.IGNORECASE,
)
_MAY_I = re.compile(
    r"\b(?:can|could|may|might|can'?t|cannot)\s+(?:i|we|they|he|she|the customer|customers|my customer|it|this|that"
    r"|ORDER|my order|the order|this order|that order|one|line \d+)\b"
    r"|\bis it (?:still )?(?:possible|too late|ok(?:ay)?|allowed)\b|\b(?:am i|are we|is the customer|are they)"
    r" (?:still )?(?:able|allowed)\b|\bwould it be possible\b|\bis there (?:any |a |still (?:a |any )?)?(?:way|chance"
    r"|option)\b|\bhow (?:do|can|would|could) (?:i|we|they|one)\b|\bstill be\b|\bpossible to\b",
    re.IGNORECASE,
)
_POLITE = re.compile(r"\b(?:please|pls|plz|kindly)\b", re.IGNORECASE)
_AUX_START = re.compile(
    r"^(?:(?:so|and|ok|okay|hi|hey|hello|um|uh|quick question|just checking|sorry|also|but|wait|oh|btw)\W+)*"
    r"(?:was|were|is|isn'?t|wasn'?t|are|aren'?t|has|hasn'?t|have|haven'?t|had|hadn'?t|did|didn'?t|does|doesn'?t"
    r"|do|got)\b",
    re.IGNORECASE,
)
_WH_STATE = re.compile(
    r"\b(?:when|why|who|how|where|what)\b(?:\W+\w+){0,4}?\W+(?:was|were|did|has|have|had|got|been|is)\b", re.I
)
_PARTICIPLE = re.compile(
    r"\b(?:cancell?ed|changed|modified|reduced|increased|lowered|amended|adjusted|expedited|rushed|escalated"
    r"|prioriti[sz]ed|updated)\b",
    re.IGNORECASE,
)
_WANTS = re.compile(
    r"\b(?:please|pls|plz|kindly|want|wants|wanted|need|needs|would like|'d like|wish|must|have to|has to|should"
    r"|make sure|asap|get (?:it|this|them|ORDER)|have (?:it|this|them|ORDER))\b",
    re.IGNORECASE,
)
_STATE_NOUN = re.compile(
    r"\b(?:status of (?:the |my |our |that |this )?(?:cancel\w*|change|request|ticket|expedite)"
    r"|(?:cancel\w*|change|request|ticket|expedite) status|(?:go|gone|went) through"
    r"|what happened (?:to|with) (?:the |my |our )?(?:cancel\w*|change|request|ticket))\b",
    re.IGNORECASE,
)

# States a yes/no question can ask about, when no action word is involved.
_ASKED_STATES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("delivered", re.compile(r"\b(?:deliver(?:ed)?|arrived?|received|get there|got there)\b", re.I)),
    (
        "shipped",
        re.compile(r"\b(?:ship(?:ped)?|dispatch(?:ed)?|sent(?: out)?|left(?: the warehouse)?|gone out)\b", re.I),
    ),
    ("held", re.compile(r"\b(?:on hold|held|blocked|stuck)\b", re.I)),
    ("released", re.compile(r"\breleased\b", re.I)),
    ("backordered", re.compile(r"\bback-?ordered\b", re.I)),
)
_ACTION_STATES: dict[str, str] = {
    "cancel": "cancelled",
    "change": "changed",
    "expedite": "expedited",
    "ticket": "ticket",
    "address_change": "address",
    "handover": "handover",
}

# ---------------------------------------------------------------------------- yes / no


def _wordset(*chunks: str) -> frozenset[str]:
    return frozenset(" ".join(chunks).split())


_YES = (
    r"(?:yes|yeah|yea|yep|yup|ya|y|sure|ok|okay|k|confirm(?:ed)?|i confirm|go ahead|go for it|do it|please do"
    r"|proceed|correct|that'?s (?:right|correct|fine|ok)|affirmative|absolutely|definitely|of course|please"
    r"|approved?|alright|all right|right|sounds good)"
)
_YES_START = re.compile(rf"^{_YES}\b", re.IGNORECASE)
# Words a confirmation may carry besides its yes ("yes please, go ahead and cancel it, thanks").
_FILLER = _wordset(
    "yes yeah yep yup ya sure ok okay confirm confirmed i go ahead for it do please proceed correct that's thats "
    "right fine absolutely definitely of course thanks thank you cheers and the order this one that that's "
    "request it's just now alright all y k ya yea please thing sounds good"
)
_NOT_YES = re.compile(
    r"\b(?:no|not|don'?t|dont|never|wait|hold on|but|instead|actually|stop|rather|except|only|cancel that"
    r"|scratch that|hmm|maybe|later)\b|\?\s*$",
    re.IGNORECASE,
)
_NO = re.compile(
    r"^\s*(?:no|nope|nah|n|no thanks|no thank you|no,? thanks|don'?t|do not|dont|stop|never ?mind|nevermind|forget it"
    r"|cancel that|scratch that|not now|not yet|leave it|hold off|wait|abort|no,? don'?t|no,? leave it"
    r"|no,? not now|please don'?t|not needed|no need)\b[\s!.,a-z']*$",
    re.IGNORECASE,
)


@dataclass
class Parsed:
    """What a message asks and the entities it names."""

    intent: Intent
    order_ids: list[str] = field(default_factory=list)
    skus: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    qty: float | None = None
    region: str | None = None
    other_line: bool = False
    question: bool = False  # "can I cancel it?" asks about policy; "cancel it" asks for the action
    injection: bool = False
    refers_back: bool = False  # "it", "that order", "why?", "and the other line?"
    asked_state: str | None = None  # "was it cancelled?" → "cancelled"; "has it shipped?" → "shipped"
    negated: list[str] = field(default_factory=list)  # actions the message says not to take
    either: bool = False  # "SO-1 or SO-2?": the customer is not sure which order
    when: bool = False  # "when will it arrive?"
    why: bool = False  # "why ...?"
    typed_ids: dict[str, str] = field(default_factory=dict)  # order id → how it was typed


def _unique(items: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


def normalise(message: str) -> str:
    return " ".join(message.replace("’", "'").replace("‘", "'").split())


def extract(message: str) -> Parsed:
    """Intent and entities of one message, by rules only."""
    text = normalise(message)
    low = text.lower()
    typed: dict[str, str] = {}
    found: list[tuple[int, str]] = []
    for m in _ORDER.finditer(text):
        found.append((m.start(), f"SO-{m.group(1)}"))
        typed.setdefault(f"SO-{m.group(1)}", m.group(0))
    for m in _LOOSE_ORDER.finditer(text):
        oid = f"SO-{m.group(1).upper()}"
        found.append((m.start(), oid))
        typed.setdefault(oid, m.group(0))
    for m in _BARE_ORDER.finditer(text):
        num = m.group(1) or m.group(2)
        found.append((m.start(), f"SO-{num}"))
        typed.setdefault(f"SO-{num}", m.group(0))
    orders = _unique([oid for _, oid in sorted(found)])
    skus = _unique([f"SKU-{m}" for m in _SKU.findall(text)])
    lines = [int(n) for n in _LINE.findall(text)]
    qty_m = _QTY.search(_ORDER.sub(" ", text))
    region_m = next((m for m in _REGION.findall(text) if not m.startswith(("SO-", "SK"))), None)
    parsed = Parsed(
        intent="unknown",
        order_ids=orders,
        skus=skus,
        lines=lines,
        qty=float(qty_m.group(1)) if qty_m else None,
        region=region_m,
        other_line=bool(_OTHER_LINE.search(text)),
        injection=bool(_INJECTION.search(text)),
        typed_ids=typed,
    )
    parsed.refers_back = not orders and (
        bool(re.search(r"\b(it|this order|that order|the order|my order|its|this one|that one|them)\b", low))
        or parsed.other_line
        or bool(re.fullmatch(r"\s*(and )?why\??\s*", low))
        or bool(lines)
    )
    if len(orders) > 1:
        first, last = sorted(found)[0][0], sorted(found)[-1][0]
        parsed.either = bool(re.search(r"\bor\b", low[first:last]))
    parsed.when = bool(re.search(r"\bwhen\b.*\b(?:arriv|get|deliver|receive|come|here|ship)|\beta\b|\bhow long\b", low))
    # Order ids, SKUs and line references are not words of the sentence.
    plain = _SKU.sub(" SKU ", _LOOSE_ORDER.sub(" ORDER ", _ORDER.sub(" ORDER ", low)))
    plain = " ".join(plain.split())
    parsed.intent = _intent(low, plain, parsed)
    return parsed


# ---------------------------------------------------------------------------- classification


def _actions(plain: str) -> list[tuple[int, ActionIntent, re.Match[str]]]:
    """Every action word in the message, by position. An address change beats a change ("change
    the delivery address"), removing a line is a change, not a cancellation ("cancel line 2"), and
    a complaint is a ticket only when nothing more specific is asked."""
    found: list[tuple[int, ActionIntent, re.Match[str]]] = []
    for i, (action, regex) in enumerate(_ACTION_WORDS):
        for m in regex.finditer(plain):
            if i == len(_ACTION_WORDS) - 1 and found:
                continue
            found.append((m.start(), action, m))
    kinds = {a for _, a, _ in found}
    if "address_change" in kinds:
        found = [f for f in found if f[1] != "change"]
    line_changes = {f[0] for f in found if f[1] == "change"}
    found = [f for f in found if not (f[1] == "cancel" and f[0] in line_changes)]
    return sorted(found, key=lambda t: t[0])


def _clause_before(plain: str, start: int) -> str:
    """The text of the clause before position ``start`` (after the last sentence or clause break)."""
    before = plain[:start]
    cut = 0
    for m in _CLAUSE_BREAK.finditer(before):
        cut = m.end()
    return before[cut:]


def _clause_after(plain: str, end: int) -> str:
    """The rest of the sentence after position ``end``."""
    m = re.search(r"[.;!?]", plain[end:])
    return plain[end : end + m.end()] if m else plain[end:]


def mode_of(plain: str, m: re.Match[str], action: ActionIntent) -> Mode:
    """Whether the action word at ``m`` is asked for, asked about (may it be done? has it been?) or negated."""
    clause = _clause_before(plain, m.start())
    if _NEGATED_BEFORE.search(clause):
        return "negated"
    if action == "handover":
        return "request"  # "can I talk to a human?" asks for one
    sentence = clause + m.group(0) + _clause_after(plain, m.end())
    if _KNOWING.search(clause) or _STATE_NOUN.search(sentence):
        # "asking if it can still be changed" asks what is allowed; "asking if it was changed", what happened
        return "question" if _MAY_I.search(sentence) else "state"
    if _OR_NOT.search(sentence):
        return "question" if _MAY_I.search(clause) else "state"
    if _ASK_YOU.search(clause):
        return "request"
    if _MAY_I.search(sentence):
        return "request" if _POLITE.search(sentence) and not sentence.rstrip().endswith("?") else "question"
    if _WH_STATE.search(clause + m.group(0)) and not re.search(r"\b(?:when|how) (?:can|could|will|would)\b", clause):
        return "state"
    if _AUX_START.search(clause.lstrip(" ,")):
        return "state"
    if _PARTICIPLE.fullmatch(m.group(0)) and not _WANTS.search(sentence):
        return "state"
    return "request"


def _intent(low: str, plain: str, p: Parsed) -> Intent:
    has_why = bool(re.search(r"\bwhy\b|\bhow come\b|\breason\b|\bexplain\b", low))
    p.why = has_why
    if not p.order_ids and not p.skus and _GREETING.match(low):
        return "greeting"
    if not p.order_ids and not p.skus and is_confirmation(low):
        return "confirm"
    if not p.order_ids and not p.skus and is_refusal(low):
        return "decline"
    if not p.order_ids and not p.refers_back and _POLICY_NOUN.search(low) and not re.search(r"\bticket\b", low):
        return "sop"
    chosen: Intent | None = None
    for _, action, m in _actions(plain):
        mode = mode_of(plain, m, action)
        if mode == "negated":
            if action not in p.negated:
                p.negated.append(action)
            continue
        if action == "change" and not (
            p.order_ids or p.refers_back or re.search(r"\b(?:qty|quantity|units|line|pieces|pcs)\b", low)
        ):
            continue  # "can I change my mind" is not an order change
        if mode == "state":
            p.asked_state = p.asked_state or _ACTION_STATES[action]
            continue
        if action == "address_change" and re.search(r"\b(?:what|which|where)\b[^?]*\baddress\b", low):
            p.asked_state = "address"  # "what address is it going to?" asks, it does not change
            continue
        p.question = mode == "question" and action in ("cancel", "change", "address_change", "expedite")
        if p.question and not p.order_ids and not p.refers_back and action != "expedite":
            return "sop"  # "how do I cancel an order?" is a policy question about no order
        chosen = action
        break
    if chosen is not None:
        return chosen
    if p.asked_state is None and (_AUX_START.search(plain) or _OR_NOT.search(plain) or _KNOWING.search(plain)):
        for state, regex in _ASKED_STATES:
            if regex.search(plain):
                p.asked_state = state
                break
    if not p.order_ids and _SOP_WORDS.search(low) and not re.search(r"\bticket\b", low) and not p.negated:
        return "sop"
    if has_why or re.search(r"\blate\b|\bdelay", low):
        if re.search(r"\bheld\b|\bhold\b|\bstuck\b|\bblocked\b", low):
            return "why_held"
        split_words = (
            r"\bsplit\b|\bpartial|\bpart of\b|\bonly (?:got|get|received)\b"
            r"|\btwo (?:shipments|parcels|boxes)\b|\bbackorder|\bmissing\b"
        )
        if re.search(split_words, low):
            return "why_split"
        if re.search(r"\blate\b|\bdelay|\bpromise|\btaking so long\b|\bnot (?:yet )?(?:shipped|arrived)\b", low):
            return "why_late"
        if p.asked_state in ("cancelled", "changed", "expedited", "ticket"):
            return "status"  # "why was it cancelled?" is answered from the order and its requests
        return "why"
    if p.skus and not p.order_ids:
        return _sku_intent(plain)
    if re.search(r"\b(?:in stock|availab|stock of|how many .* have)\b", low):
        return "availability"
    if p.order_ids or p.other_line or p.lines or p.asked_state or p.negated:
        return "status"
    if re.search(r"\b(?:status|where|track|when|update on|what'?s happening|eta)\b", low):
        return "status"
    if _SOP_WORDS.search(low):
        return "sop"
    return "unknown"


_AVAILABILITY = re.compile(
    r"\b(?:stock|availab\w*|how many|get|buy|order more|lead time|restock\w*|back in|pickable|near|ship from"
    r"|on hand|left|supply|when)\b",
    re.IGNORECASE,
)
_SUBSTITUTES = re.compile(
    r"\b(?:substitut\w*|alternatives?|replacements?|instead|similar|equivalent|swap|other options?)\b", re.I
)
_DESCRIBE = re.compile(
    r"\bwhat(?: is|'s|s| are) (?:sku|it|this|that|these|they)\W*$|\b(?:describe|description|tell me about|details?"
    r"|info(?:rmation)? (?:on|about)|what kind of|what type of)\b",
    re.IGNORECASE,
)


def _sku_intent(plain: str) -> Intent:
    """A message about SKUs and no order: stock (availability) or the catalogue (product)."""
    if _AVAILABILITY.search(plain):
        return "availability"
    if _SUBSTITUTES.search(plain) or _DESCRIBE.search(plain):
        return "product"
    rest = re.sub(r"\bsku\b|[^a-z' ]", " ", plain.lower()).split()
    return "product" if any(w not in _QUESTION_WORDS for w in rest) else "availability"


_QUESTION_WORDS = _wordset(
    "is are does do what how can could will would the a an it this that of for about and or me you your please "
    "any there have has tell know i we our my pls plz thanks hi hello hey"
)


def product_topic(message: str) -> Literal["substitutes", "description", "other"]:
    """What a product question asks of the catalogue."""
    low = _SKU.sub(" sku ", normalise(message).lower())
    low = " ".join(low.split())
    if _SUBSTITUTES.search(low):
        return "substitutes"
    if _DESCRIBE.search(low):
        return "description"
    return "other"


def asked_words(message: str) -> list[str]:
    """The content words of a product question ("is SKU-1 waterproof?" → ["waterproof"])."""
    plain = _SKU.sub(" ", normalise(message).lower())
    words = re.findall(r"[a-z][a-z'-]+", plain)
    return [w for w in words if w not in _QUESTION_WORDS and w not in _STOP]


_STOP = _wordset(
    "sku item product made come comes in with be being been was were its it's they them their much many very "
    "still also just really"
)


def is_confirmation(message: str, allowed: frozenset[str] = frozenset()) -> bool:
    """An explicit yes: a yes word first, nothing that takes it back, and no other words than
    fillers and ``allowed`` (the pending request's own words: "yes, cancel it")."""
    low = normalise(message).lower().strip()
    if not low or not _YES_START.match(low) or _NOT_YES.search(low):
        return False
    words = re.findall(r"[a-z0-9'-]+", low)
    return all(w in _FILLER or w in allowed for w in words)


def is_refusal(message: str) -> bool:
    """A plain no ("no", "no thanks", "never mind", "don't"); "no, change line 2 instead" is a new request."""
    low = normalise(message).lower()
    if not _NO.match(low) or len(low.split()) > 6:
        return False
    rest = re.sub(r"\bcancel that\b", " ", low)
    return not any(regex.search(rest) for _, regex in _ACTION_WORDS)
