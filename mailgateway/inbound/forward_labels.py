"""Multilingual tables for the forward parser: labels, separator phrases, subject prefixes."""

from __future__ import annotations

import enum
from collections.abc import Iterable

# Characters trimmed around labels, values and lines: JavaScript's trim() set, roughly, plus
# the zero-width characters mail clients leave behind.
WHITESPACE = (
    " \t\n\r\f\v\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u200b\u2028\u2029\u202f\u205f\u3000\ufeff"
)

COLONS = ":："

# A label is at most this many characters (before the colon) on a header line.
MAX_LABEL_CHARS = 40


class Field(enum.StrEnum):
    """Which header of the forwarded message a label names."""

    FROM = "from"
    TO = "to"
    CC = "cc"
    DATE = "date"
    SUBJECT = "subject"
    IGNORED = "ignored"  # a header we recognise (Reply-To, Bcc...) but do not report


def label_key(text: str) -> str:
    """Normalise a label or phrase for lookup: case-folded (Turkish dotted İ as i), whitespace
    collapsed."""
    return " ".join(text.casefold().replace("\u0307", "").split())


# fmt: off
_FROM = (
    "from", "von", "de", "da", "van", "fra", "från", "frá", "od", "от", "від", "від кого",
    "kimden", "gönderen", "feladó", "lähettäjä", "šalje", "saatja", "expeditorul", "expeditor",
    "de la", "отправитель", "mittente", "nadawca", "afzender", "absender", "remitente",
    "pošiljatelj", "pošiljalac", "από", "αποστολέας", "từ", "送信元", "差出人", "发件人", "發件人",
    "寄件者", "보낸 사람", "보낸사람", "od koho",
)
_TO = (
    "to", "an", "a", "à", "para", "pour", "aan", "til", "till", "do", "komu", "kime",
    "címzett", "vastaanottaja", "prima", "saaja", "destinatarul", "destinatar", "către", "кому",
    "destinatario", "destinatari", "destinataire", "destinataires", "adresat", "adresaci",
    "empfänger", "pre", "za", "primatelj", "προς", "đến", "宛先", "送信先", "收件人", "收件者",
    "받는 사람", "받는사람",
)
_CC = (
    "cc", "kopie", "kopie (cc)", "copie", "copie à", "kopia", "kopi", "kopio", "másolat",
    "másolatot kap", "bilgi", "копия", "копія", "dw", "cópia", "copia", "kópia", "kopija",
    "κοιν.", "κοιν", "抄送", "副本", "참조", "kopia do wiadomości", "bilgi kopyası",
)
_DATE = (
    "date", "sent", "datum", "dato", "data", "fecha", "enviado", "enviada", "enviado el",
    "enviada em", "envoyé", "envoyé le", "gesendet", "verzonden", "verstuurd", "inviato",
    "skickat", "sendt", "wysłano", "wysłane", "odesláno", "odoslané", "lähetetty", "elküldve",
    "küldve", "отправлено", "відправлено", "надіслано", "gönderilen", "gönderildi",
    "gönderme tarihi", "trimis", "dată", "tarih", "дата", "päivämäärä", "päiväys",
    "dátum", "kuupäev", "saadetud", "poslano", "poslané", "poslato", "ημερομηνία",
    "στάλθηκε", "ngày", "đã gửi", "日付", "送信日時", "日期", "发送时间", "傳送時間", "寄件日期",
    "날짜", "보낸 날짜",
)
_SUBJECT = (
    "subject", "betreff", "objet", "sujet", "asunto", "assunto", "oggetto", "onderwerp",
    "emne", "ämne", "temat", "tema", "тема", "předmět", "predmet", "aihe", "tárgy", "konu",
    "subiect", "subiectul", "naslov", "teema", "θέμα", "téma", "chủ đề", "件名", "主题", "主旨",
    "제목",
)
_IGNORED = (
    "reply-to", "reply to", "antwort an", "répondre à", "responder a", "rispondi a",
    "antwoord aan", "svar till", "svar til", "odpowiedź do", "odpovědět na", "válaszcím",
    "vastausosoite", "yanıt adresi", "răspuns la", "ответить", "відповісти", "bcc", "cco",
    "ccn", "bkopie", "blindkopie", "copie cachée", "copia oculta", "copia nascosta",
    "ukryta kopia", "skrytá kopie", "skrytá kópia", "rejtett másolat", "piilokopio",
    "gizli kopya", "скрытая копия", "прихована копія", "importance", "priority", "wichtigkeit",
    "priorität", "priorité", "attachments", "attachment", "anhänge", "anlagen",
    "pièces jointes", "datos adjuntos", "allegati", "bijlagen", "załączniki", "přílohy",
    "prílohy", "mellékletek", "liitteet", "ekler", "вложения", "вкладення", "bilagor",
    "vedhæftede filer", "vedlegg", "anexos", "ataşamente", "sender", "resent-from",
    "message-id", "in-reply-to", "references",
)
# fmt: on


def _table(groups: Iterable[tuple[Field, tuple[str, ...]]]) -> dict[str, Field]:
    """Build the label lookup table (normalised label -> field)."""
    table: dict[str, Field] = {}
    for field, labels in groups:
        for label in labels:
            table.setdefault(label_key(label.rstrip(":")), field)
    return table


LABELS: dict[str, Field] = _table(
    (
        (Field.FROM, _FROM),
        (Field.TO, _TO),
        (Field.CC, _CC),
        (Field.DATE, _DATE),
        (Field.SUBJECT, _SUBJECT),
        (Field.IGNORED, _IGNORED),
    )
)

# Label lengths, longest first, and the longest, for the scan of labels glued on one line (Yahoo).
LABEL_SIZES: tuple[int, ...] = tuple(sorted({len(label) for label in LABELS}, reverse=True))
MAX_GLUED_LABEL = LABEL_SIZES[0]

# fmt: off
# Phrases that name a forwarded message, as in "---------- Forwarded message ---------" or
# "Begin forwarded message:". Case and spacing do not matter.
FORWARD_PHRASES: frozenset[str] = frozenset(
    label_key(p)
    for p in (
        # English and clients that keep English whatever the locale (Gmail, Missive, MailMate)
        "forwarded message", "forwarded email", "forwarded e-mail", "begin forwarded message",
        "fwd.msg", "forwarded mail",
        # German
        "weitergeleitete nachricht", "anfang der weitergeleiteten nachricht",
        "weitergeleitete e-mail",
        # French
        "message transféré", "message transmis", "début du message réexpédié",
        "début du message transféré", "courriel transféré",
        # Spanish, Portuguese, Italian, Romanian
        "mensaje reenviado", "inicio del mensaje reenviado", "mensagem encaminhada",
        "mensagem reencaminhada", "início da mensagem reencaminhada",
        "início da mensagem encaminhada", "messaggio inoltrato", "inizio messaggio inoltrato",
        "mesaj redirecționat", "mesaj redirectionat", "începe mesajul redirecționat",
        "mesaj transmis",
        # Dutch, Scandinavian, Finnish, Estonian
        "doorgestuurd bericht", "begin doorgestuurd bericht", "videresendt meddelelse",
        "videresendt besked", "start på videresendt besked", "videresendt melding",
        "videresendt e-post", "vidarebefordrat meddelande", "vidarebefordrat mejl",
        "vidarebefordrat e-postmeddelande", "edelleenlähetetty viesti", "välitetty viesti",
        "välitetty viesti alkaa", "edasi saadetud kiri", "edastatud kiri",
        # Slavic, Hungarian, Turkish, Greek
        "přeposlaná zpráva", "začátek přeposílané zprávy", "preposlaná správa",
        "začiatok preposlanej správy", "wiadomość przesłana dalej", "przekazana wiadomość",
        "treść przekazanej wiadomości", "początek przekazywanej wiadomości",
        "proslijeđena poruka", "započni proslijeđenu poruku", "prosleđena poruka",
        "posredovano sporočilo", "továbbított üzenet", "továbbított levél kezdete",
        "iletilen ileti", "iletilmiş mesaj", "ileti başlangıcı", "перенаправленное сообщение",
        "пересылаемое сообщение", "пересланное сообщение",
        "начало переадресованного сообщения", "переслане повідомлення",
        "перенаправлене повідомлення", "початок листа, що пересилається",
        "προωθημένο μήνυμα",
        # East Asian
        "メッセージを転送", "転送されたメッセージ", "转发的邮件", "轉寄的郵件", "전달된 메시지",
    )
)

# Phrases of Outlook-style "original message" separators, which replies use as well.
ORIGINAL_PHRASES: frozenset[str] = frozenset(
    label_key(p)
    for p in (
        "original message", "ursprüngliche nachricht", "message d'origine", "message original",
        "mensaje original", "messaggio originale", "oorspronkelijk bericht",
        "oprindelig meddelelse", "opprinnelig melding", "ursprungligt meddelande",
        "alkuperäinen viesti", "wiadomość oryginalna", "oryginalna wiadomość",
        "původní zpráva", "pôvodná správa", "eredeti üzenet", "исходное сообщение",
        "оригінальне повідомлення", "mensagem original", "mesaj original", "mesajul original",
        "orijinal mesaj", "özgün ileti", "izvorna poruka", "originalna poruka",
        "αρχικό μήνυμα", "元のメッセージ", "原始邮件", "原始郵件", "원본 메시지",
    )
)

# Subject prefixes (before the colon) that mark a forward, and those that mark a reply.
# "VS" is a forward in Danish and Norwegian but a reply in Finnish: it counts as a forward.
FORWARD_SUBJECT_PREFIXES: frozenset[str] = frozenset(
    label_key(p)
    for p in (
        "fw", "fwd", "fwrd", "tr", "trs", "transf", "wg", "wtr", "vs", "vb", "vl", "rv",
        "reenv", "enc", "i", "inoltro", "pd", "prz", "doorst", "videresend", "vidarebefordra",
        "välit", "edasta", "př", "pf", "tov", "továbbítás", "İLT", "redir", "redir.",
        "пересл", "переслать", "пер", "προωθ", "πρθ", "転送", "转发", "轉寄", "전달",
    )
)
REPLY_SUBJECT_PREFIXES: frozenset[str] = frozenset(
    label_key(p)
    for p in (
        "re", "aw", "sv", "antw", "odp", "odg", "ats", "vá", "ynt", "yanit", "res",
        "rif", "r", "rép", "отв", "ответ", "відп", "απ", "σχετ", "答复", "回复", "回覆", "返信",
    )
)

# Words that stand between the date and the name in "On <date>, <name> <address> wrote:" lines.
WROTE_CONNECTORS: frozenset[str] = frozenset(
    label_key(w)
    for w in (
        "on", "am", "le", "el", "em", "il", "giorno", "op", "den", "d.", "dne", "dnia", "heeft",
        "időpontban", "používateľ", "użytkownik", "uživatel", "пользователь", "користувач",
        "skrev", "schrieb", "kirjoitti", "at", "à", "kl.", "kl", "klo", "um", "om", "o", "u",
    )
)
# fmt: on
