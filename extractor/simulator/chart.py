"""A simulated company's AccountService lists: its chart of accounts, VAT codes, entry types.

The chart follows the Norwegian standard (NS 4102): every account the company's ledger posts
to (:data:`~extractor.simulator.ledger.ACCOUNTS`), every account its VAT codes post to, the
customer and supplier ledgers, and a share of the standard's others that varies by seed
(40 to 90 accounts in all). Each list follows from the company's seed.
"""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any, Final

from extractor.simulator.ledger import ACCOUNTS
from extractor.soap import NIL

Records = list[dict[str, Any]]

#: Norwegian VAT codes: number, name, rate, the account they post to (None: none).
VAT_CODES: Final = (
    ("0", "Ingen mva-behandling", "0", None),
    ("1", "Inngående mva, høy sats", "25", 2710),
    ("3", "Utgående mva, høy sats", "25", 2700),
    ("5", "Innenlands omsetning fritatt for mva", "0", None),
    ("6", "Omsetning utenfor mva-loven", "0", None),
    ("11", "Inngående mva, middels sats", "15", 2711),
    ("13", "Inngående mva, lav sats", "12", 2712),
    ("31", "Utgående mva, middels sats", "15", 2701),
    ("33", "Utgående mva, lav sats", "12", 2702),
    ("51", "Innenlands omsetning med omvendt avgiftsplikt", "0", None),
    ("52", "Utførsel av varer & tjenester", "0", None),
    ("81", "Innførsel av varer, med fradrag <25 %>", "25", 2710),
    ("86", "Tjenester kjøpt fra utlandet, med fradrag", "25", 2710),
    ("91", "Kjøp av klimakvoter og gull", "25", 2710),
)
#: The codes every company has; the others it may have.
_COMMON_CODES: Final = frozenset({"0", "1", "3", "5", "6", "11", "31", "33"})
#: NS 4102 accounts: number, name, the VAT code an entry on it takes by default.
STANDARD: Final = (
    (1000, "Forskning og utvikling", None), (1070, "Utsatt skattefordel", None),
    (1200, "Maskiner og anlegg", None), (1230, "Personbiler", None),
    (1250, "Inventar & utstyr", None), (1280, "Kontormaskiner", None),
    (1300, "Investeringer i datterselskap", None), (1400, "Varebeholdning", None),
    (1500, "Kundefordringer", None), (1530, "Opptjent, ikke fakturert inntekt", None),
    (1570, "Reiseforskudd", None), (1580, "Avsetning for tap på fordringer", None),
    (1700, "Forskuddsbetalt leie", None), (1749, "Andre forskuddsbetalte kostnader", None),
    (1900, "Kontanter", None), (1920, "Bankinnskudd", None),
    (1950, "Bankinnskudd for skattetrekk", None), (2000, "Aksjekapital", None),
    (2050, "Annen egenkapital", None), (2080, "Udekket tap", None),
    (2400, "Leverandørgjeld", None), (2500, "Betalbar skatt, ikke utlignet", None),
    (2600, "Forskuddstrekk", None), (2700, "Utgående mva", None),
    (2701, "Utgående mva, middels sats", None), (2702, "Utgående mva, lav sats", None),
    (2710, "Inngående mva", None), (2711, "Inngående mva, middels sats", None),
    (2712, "Inngående mva, lav sats", None), (2740, "Oppgjørskonto merverdiavgift", None),
    (2770, "Skyldig arbeidsgiveravgift", None),
    (2780, "Påløpt arbeidsgiveravgift på ferielønn", None),
    (2900, "Forskudd fra kunder", None), (2940, "Skyldig feriepenger", None),
    (2960, "Påløpte kostnader", None), (3000, "Salgsinntekt", "3"),
    (3100, "Salgsinntekt, avgiftsfri", "5"), (3200, "Salgsinntekt, utenfor avgiftsområdet", "6"),
    (3300, "Salgsinntekt, middels sats", "31"), (3400, "Offentlig tilskudd & refusjon", "0"),
    (3600, "Leieinntekt fast eiendom", "0"), (3900, "Annen driftsrelatert inntekt", "3"),
    (4000, "Innkjøp av råvarer og halvfabrikata", "1"),
    (4300, "Innkjøp av varer for videresalg", "1"),
    (4500, "Fremmedytelser og underentreprise", "1"), (4990, "Beholdningsendringer", None),
    (5000, "Lønn til ansatte", None), (5090, "Påløpt, ikke utbetalt lønn", None),
    (5180, "Påløpte feriepenger", None), (5400, "Arbeidsgiveravgift", None),
    (5420, "Innberetningspliktig pensjonskostnad", None), (5900, "Annen personalkostnad", None),
    (6000, "Avskrivning på bygninger og annen fast eiendom", None),
    (6010, "Avskrivning på transportmidler, maskiner og inventar", None),
    (6100, "Frakt, transport & forsikring ved vareforsendelse", "1"),
    (6300, "Leie lokale", "0"), (6340, "Lys, varme", "1"),
    (6540, "Inventar", "1"), (6551, "Datautstyr (maskinvare) <15 000 kr", "1"),
    (6552, "Programvare, anskaffelse", "1"), (6600, "Reparasjon og vedlikehold bygninger", "1"),
    (6700, "Revisjons- og regnskapshonorar", "1"), (6790, "Annen fremmed tjeneste", "1"),
    (6800, "Kontorrekvisita", "1"), (6860, "Møte, kurs, oppdatering o.l.", "1"),
    (6900, "Elektronisk kommunikasjon", "1"), (6940, "Porto", "0"),
    (7000, "Drivstoff", "1"), (7100, "Bilgodtgjørelse, oppgavepliktig", None),
    (7140, "Reisekostnad, ikke oppgavepliktig", "13"), (7150, "Diettkostnad, oppgavepliktig", None),
    (7320, "Reklamekostnad", "1"), (7350, "Representasjon, fradragsberettiget", "1"),
    (7500, "Forsikringspremie", "0"), (7700, "Styre- og bedriftsforsamlingsmøter", None),
    (7770, "Bank- og kortgebyrer", "0"), (7790, "Annen kostnad, fradragsberettiget", "1"),
    (7830, "Tap på fordringer", None), (8040, "Renteinntekt, skattefri", None),
    (8050, "Annen renteinntekt", None), (8060, "Valutagevinst (agio)", None),
    (8150, "Annen rentekostnad", None), (8160, "Valutatap (disagio)", None),
    (8300, "Betalbar skatt", None), (8800, "Årsresultat", None),
    (8960, "Overføringer annen egenkapital", None),
)  # fmt: skip
#: Accounts every chart has beside the ledger's and the VAT codes': the customer and supplier
#: ledgers, the VAT settlement, equity and the year's result.
_ALWAYS: Final = frozenset({1500, 2000, 2050, 2400, 2740, 8800})
#: Entry types (GetTypeList): number, title, its number series.
ENTRY_TYPES: Final = (
    (1, "Utgående faktura", 1), (2, "Innbetaling", 2), (3, "Inngående faktura", 3),
    (4, "Utbetaling", 2), (5, "Kassesalg", 4), (6, "Lønn", 5), (7, "Diverse bilag", 6),
    (8, "Åpningsbalanse", 6), (9, "Kreditnota & korreksjon", 1), (10, "Avskrivninger", 6),
    (11, "Valutaomregning <automatisk>", 6), (12, "Periodisering", 6),
)  # fmt: skip


def vat_codes(seed: int) -> Records:
    """``TaxCodeElement`` records: the common codes and some of the others; ``TaxId`` an id of
    its own, ``TaxNo`` the code; a code that posts to no account says so with nil or absence."""
    rng = random.Random(f"vat-codes:{seed}")
    codes: Records = []
    for tax_id, (number, name, rate, account) in enumerate(_vat_codes(seed), start=1):
        code: dict[str, Any] = {"TaxId": tax_id, "TaxNo": number, "TaxName": name}
        code["TaxRate"] = Decimal(rate) if rng.random() < 0.5 else Decimal(f"{rate}.00")
        if account is not None:
            code["AccountNo"] = account
        elif rng.random() < 0.5:
            code["AccountNo"] = NIL
        codes.append(code)
    rng.shuffle(codes)
    return codes


def accounts(seed: int) -> Records:
    """``AccountData`` records (see the module); ``AccountId`` the service's own id, never the
    account's number; the VAT code an account takes, as ``TaxNo`` and its ``AccountTax``."""
    rng = random.Random(f"accounts:{seed}")
    codes = _vat_codes(seed)
    tax_ids = {number: tax_id for tax_id, (number, *_) in enumerate(codes, start=1)}
    needed = ACCOUNTS | _ALWAYS | {account for *_, account in codes if account is not None}
    share = rng.uniform(0.45, 1.0)
    chosen = [
        entry
        for entry in STANDARD
        if entry[0] in needed or (rng.random() < share and entry[2] in (None, *tax_ids))
    ]
    ids = sorted(rng.sample(range(10_000, 99_999), len(chosen)))
    records: Records = []
    for account_id, (number, name, code) in zip(ids, chosen, strict=True):
        record: dict[str, Any] = {"AccountId": account_id, "AccountNo": number, "AccountName": name}
        if code is not None:
            record |= {"AccountTax": tax_ids[code], "TaxNo": int(code)}
        elif rng.random() < 0.5:
            record |= {"AccountTax": 0, "TaxNo": 0}  # else absent: the WSDL's default 0
        records.append(record)
    rng.shuffle(records)
    return records


def entry_types(seed: int) -> Records:
    """``TypeData`` records: the usual entry types, some of them, one now and then untitled."""
    rng = random.Random(f"entry-types:{seed}")
    kept = [entry for entry in ENTRY_TYPES if entry[0] <= 8 or rng.random() < 0.5]
    records: Records = []
    for type_id, (number, title, series) in zip(
        rng.sample(range(100, 999), len(kept)), kept, strict=True
    ):
        record: dict[str, Any] = {"TypeId": type_id, "EntrySeriesId": series, "TypeNo": number}
        if rng.random() > 0.08:
            record["Title"] = title
        records.append(record)
    rng.shuffle(records)
    return records


def _vat_codes(seed: int) -> list[tuple[str, str, str, int | None]]:
    """The company's VAT codes, in the standard's order."""
    rng = random.Random(f"vat-choice:{seed}")
    return [code for code in VAT_CODES if code[0] in _COMMON_CODES or rng.random() < 0.6]
