"""Subject keys for threading: reply, forward and auto-reply prefixes and list tags stripped."""

from __future__ import annotations

import re
import unicodedata

KEY_LIMIT = 255

# Reply and forward prefixes as mail clients write them (case-folded), by language.
REPLY_FORWARD_PREFIXES: dict[str, str] = {
    "English and most clients": "re|fw|fwd",
    "German (Antwort, Weitergeleitet)": "aw|wg|antw",
    "Dutch (Antwoord, Doorgestuurd)": "antw|doorst",
    "Nordic (Svar, Vastaus, Videresendt, Välitetty)": "sv|vs|vb|fs|vl",
    "Polish (Odpowiedź, Przekaż dalej)": "odp|pd",
    "French (Transféré, Référence, Réponse)": "tr|réf|ref|rép|rep",
    "Italian (Outlook: R:, I:)": "r|i|rif|inoltro",
    "Spanish and Portuguese (Reenviado, Resposta, Encaminhada)": "rv|res|enc",
    "Turkish (Yanıt, İlet)": "ynt|ilt|i̇lt",
    "Croatian, Serbian, Slovenian (Odgovor, Proslijeđeno)": "odg|prosl",
    "Hungarian (Válasz, Továbbítás)": "vá|továbbítás",
    "Latvian and Lithuanian": "atb|pārs|ats|pers",
    "Indonesian and Vietnamese": "bls|trs|tl",
    "Greek": "απ|σχετ|πρθ",
    "Russian and Ukrainian": "отв|ответ|пересл|перес|вiдп|відп",
    "Hebrew and Arabic": "השב|הועבר|رد|توجيه",
    "Chinese": "回复|回覆|答复|答覆|转发|轉寄|转寄",
    "Japanese and Korean": "返信|転送|회신|답장|전달",
}

# Out-of-office and automatic-reply subject prefixes (Exchange, Gmail, Zimbra...), by language.
AUTO_REPLY_PREFIXES: dict[str, str] = {
    "English": (
        "automatic reply|auto reply|auto-reply|autoreply|auto response|auto-response"
        "|autoresponse|out of office|out of the office|out of office autoreply"
        "|out of office reply|ooo|vacation reply|vacation response|away from the office"
        "|away from office"
    ),
    "German": "automatische antwort|abwesenheitsnotiz|automatische abwesenheitsnotiz",
    "French": "réponse automatique|absence du bureau|message d'absence",
    "Spanish": "respuesta automática|fuera de la oficina",
    "Italian": "risposta automatica|fuori sede|fuori ufficio",
    "Portuguese": "resposta automática|ausente do escritório",
    "Dutch": "automatisch antwoord|afwezig",
    "Nordic": (
        "autosvar|automatiskt svar|automatisk svar|frånvaro|fraværende"
        "|automaattinen vastaus|poissa toimistolta"
    ),
    "Polish": "odpowiedź automatyczna|automatyczna odpowiedź|poza biurem",
    "Czech and Hungarian": "automatická odpověď|mimo kancelář|automatikus válasz|házon kívül",
    "Russian, Turkish, Greek": (
        "автоматический ответ|автоответ|otomatik yanıt|otomatik yanit|otomatik cevap"
        "|αυτόματη απάντηση"
    ),
    "Chinese, Japanese, Korean": "自动回复|自動回覆|自動応答|自動返信|자동 회신|자동 응답",
}

# Subjects that say nothing (placeholders clients insert): never a reason to join.
NO_SUBJECT = {
    "placeholders": "(no subject)|no subject|untitled",
    "translations": (
        "(kein betreff)|(sans objet)|(sin asunto)|(senza oggetto)|(geen onderwerp)"
        "|(bez tematu)|(без темы)|(ingen emne)|(inget ämne)"
    ),
}


def words(*tables: dict[str, str]) -> list[str]:
    """Every word of the tables, longest first (so that a regex prefers 'fwd' to 'fw')."""
    found = {word for table in tables for group in table.values() for word in group.split("|")}
    return sorted(found, key=lambda word: (-len(word), word))


def _alternatives(*tables: dict[str, str]) -> str:
    """A regex alternation of every word of the tables."""
    return "|".join(re.escape(word) for word in words(*tables))


_COUNTER = r"(?:\s*(?:\[\d{1,4}\]|\(\d{1,4}\)|\^\d{1,4}))?"
_PREFIX = re.compile(
    rf"(?:{_alternatives(REPLY_FORWARD_PREFIXES, AUTO_REPLY_PREFIXES)}){_COUNTER}\s*[:：]\s*"
)
_LIST_TAG = re.compile(r"[\[【][^\[\]【】]{1,64}[\]】]\s*")
_TRAILER = re.compile(r"\s*\((?:fwd|fw)\)\s*$")
_AUTO_REPLY = re.compile(rf"(?:{_alternatives(AUTO_REPLY_PREFIXES)})(?:\s*[:：]|\s*$)")
_NOTES_AWAY = re.compile(r"\bis out of (?:the )?office(?: \(returning [^()]*\))?\.?$")
_WHITESPACE = re.compile(r"\s+")
_NO_SUBJECT = frozenset(words(NO_SUBJECT))


def canonical(subject: str) -> str:
    """NFKC, case-folded, whitespace collapsed: the form subjects are compared in."""
    folded = unicodedata.normalize("NFKC", subject).casefold()
    return _WHITESPACE.sub(" ", folded).strip()


def strip_prefixes(subject: str) -> str:
    """The canonical subject without leading reply/forward/auto-reply prefixes (any number,
    with counters such as 'Re[2]:'), leading list tags ('[support]') and a trailing '(fwd)'."""
    text = canonical(subject)
    while True:
        match = _PREFIX.match(text) or _LIST_TAG.match(text)
        if match is None or match.end() == 0:
            break
        text = text[match.end() :]
    return _TRAILER.sub("", text).strip()


def subject_key(subject: str) -> str | None:
    """The key conversations are matched on by subject; None when the subject says nothing."""
    key = strip_prefixes(subject)[:KEY_LIMIT]
    return None if not key or key in _NO_SUBJECT else key


def is_auto_reply_subject(subject: str) -> bool:
    """Whether a subject reads as an out-of-office or automatic reply (Exchange, Gmail,
    Zimbra, Lotus Notes and their translations), after list tags and reply prefixes."""
    text = canonical(subject)
    while (tag := _LIST_TAG.match(text)) is not None:
        text = text[tag.end() :]
    for _ in range(10):
        if _AUTO_REPLY.match(text):
            return True
        match = _PREFIX.match(text)
        if match is None:
            break
        text = text[match.end() :]
    return _NOTES_AWAY.search(canonical(subject)) is not None
