"""Tiny wmt source files in the real format, and a whole preparation on them (shared by the wmt tests).

    from wmt_source import write_source, prepare_tiny
    pairs = write_source(tmp_path / "source")          # {"train": [(de, en), ...], "validation": ..., "test": ...}
    prepare_tiny(tmp_path / "data", tmp_path / "source")  # data_dir/wmt/prepared, a 300-piece vocabulary

The layout is the Hugging Face datasets' (`wmt17/de-en/train-0000i-of-0000n.parquet`,
`wmt14/de-en/{validation,test}-00000-of-00001.parquet`, one column `translation` = struct {de, en}).
Pairs are hand-written news and parliament sentences, joined one to three at a time; validation and
test recombine the same sentences, so every character they use is in the train split. Train holds two
pairs longer than MAX_LENGTH tokens with the small vocabulary (one long on both sides, one only in
English) and validation one, which preparation must drop.
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from workloads.wmt import data

Pair = tuple[str, str]  # (German, English)

SENTENCES: list[Pair] = [
    ("Die Regierung hat am Montag neue Maßnahmen zur Senkung der Energiepreise angekündigt.",
     "The government announced new measures to lower energy prices on Monday."),
    ("Der Ausschuss wird seinen Bericht im nächsten Monat vorlegen.",
     "The committee will present its report next month."),
    ("Viele Menschen in der Stadt warten seit Jahren auf eine bezahlbare Wohnung.",
     "Many people in the city have been waiting for years for an affordable flat."),
    ("Die Polizei sucht nach Zeugen des Unfalls auf der Autobahn.",
     "The police are looking for witnesses to the accident on the motorway."),
    ("Frau Präsidentin, ich möchte dem Berichterstatter für seine ausgezeichnete Arbeit danken.",
     "Madam President, I would like to thank the rapporteur for his excellent work."),
    ("Wir müssen sicherstellen, dass die Mittel tatsächlich bei den Bürgern ankommen.",
     "We must ensure that the funds actually reach the citizens."),
    ("Die Arbeitslosigkeit ist im vergangenen Quartal leicht gesunken.",
     "Unemployment fell slightly in the last quarter."),
    ("Das Museum bleibt wegen Renovierungsarbeiten bis Ende Mai geschlossen.",
     "The museum will remain closed until the end of May for renovation work."),
    ("Nach Angaben der Behörden wurden drei Personen leicht verletzt.",
     "According to the authorities, three people were slightly injured."),
    ("Die Verhandlungen über das Handelsabkommen dauern noch an.",
     "The negotiations on the trade agreement are still ongoing."),
    ("Er sagte, das Unternehmen werde im Herbst zweihundert neue Stellen schaffen.",
     "He said the company would create two hundred new jobs in the autumn."),
    ("Die Kommission hat einen Vorschlag zur Reform des Asylsystems vorgelegt.",
     "The Commission has tabled a proposal to reform the asylum system."),
    ("Im Süden des Landes wird für das Wochenende starker Regen erwartet.",
     "Heavy rain is expected in the south of the country at the weekend."),
    ("Die Mannschaft gewann das Spiel mit zwei zu eins.",
     "The team won the match two to one."),
    ("Ich bin überzeugt, dass wir gemeinsam eine Lösung finden werden.",
     "I am convinced that together we will find a solution."),
    ("Die Preise für Lebensmittel sind im Vergleich zum Vorjahr um vier Prozent gestiegen.",
     "Food prices have risen by four per cent compared with the previous year."),
    ("Der Zug nach Berlin hat heute Morgen eine Stunde Verspätung.",
     "The train to Berlin is an hour late this morning."),
    ("Die Schüler protestierten vor dem Rathaus gegen die Kürzungen im Bildungsbereich.",
     "The pupils protested in front of the town hall against the cuts in education."),
    ("Es ist wichtig, die kleinen und mittleren Unternehmen zu unterstützen.",
     "It is important to support small and medium-sized enterprises."),
    ("Der Minister lehnte es ab, sich zu den Vorwürfen zu äußern.",
     "The minister declined to comment on the allegations."),
    ("Die Brücke über den Fluss wird im Sommer für den Verkehr gesperrt.",
     "The bridge over the river will be closed to traffic in the summer."),
    ("Wissenschaftler haben eine neue Art von Fröschen im Regenwald entdeckt.",
     "Scientists have discovered a new species of frog in the rainforest."),
    ("Die Wahlbeteiligung lag bei knapp siebzig Prozent.",
     "Turnout was just under seventy per cent."),
    ("Wir fordern die Mitgliedstaaten auf, ihre Zusagen einzuhalten.",
     "We call on the Member States to honour their commitments."),
    ("Das Krankenhaus braucht dringend mehr Pflegekräfte.",
     "The hospital urgently needs more nurses."),
    ("Am Abend fand ein Konzert auf dem Marktplatz statt.",
     "In the evening a concert took place in the market square."),
    ("Die Zentralbank hat den Leitzins unverändert gelassen.",
     "The central bank left its key interest rate unchanged."),
    ("Die Feuerwehr konnte den Brand nach zwei Stunden löschen.",
     "The fire brigade was able to put out the fire after two hours."),
    ("Der Bericht zeigt, dass die Luftqualität in den Städten besser geworden ist.",
     "The report shows that air quality in the cities has improved."),
    ("Ich stimme dem Herrn Abgeordneten in diesem Punkt völlig zu.",
     "I entirely agree with the honourable Member on this point."),
    ("Die Bauern klagen über die Trockenheit der letzten Wochen.",
     "Farmers are complaining about the drought of recent weeks."),
    ("Das Gericht wird sein Urteil am Donnerstag verkünden.",
     "The court will deliver its verdict on Thursday."),
    ("Die neue Straßenbahnlinie soll den Stadtverkehr entlasten.",
     "The new tram line is intended to relieve city traffic."),
    ("Touristen aus aller Welt besuchen jedes Jahr die Altstadt.",
     "Tourists from all over the world visit the old town every year."),
    ("Die Gewerkschaft hat für Freitag zu einem Streik aufgerufen.",
     "The union has called a strike for Friday."),
    ("Wir dürfen die Augen vor diesen Problemen nicht verschließen.",
     "We must not close our eyes to these problems."),
    ("Die Ausstellung zeigt Gemälde aus dem neunzehnten Jahrhundert.",
     "The exhibition shows paintings from the nineteenth century."),
    ("Der Vorstand erwartet für das kommende Jahr ein stärkeres Wachstum.",
     "The board expects stronger growth for the coming year."),
    ("Die Kinder spielten bis zum Einbruch der Dunkelheit im Park.",
     "The children played in the park until nightfall."),
    ("Über die Zukunft des Flughafens wird seit langem gestritten.",
     "The future of the airport has long been disputed."),
]


def _joined(pairs: list[Pair]) -> Pair:
    return " ".join(de for de, _ in pairs), " ".join(en for _, en in pairs)


def _recombined(rng: random.Random, count: int) -> list[Pair]:
    """`count` pairs, each one to three of SENTENCES drawn with `rng`, joined."""
    return [_joined(rng.sample(SENTENCES, rng.randint(1, 3))) for _ in range(count)]


def long_pair() -> Pair:
    """A pair whose both sides are far longer than MAX_LENGTH tokens with the tiny vocabulary."""
    return _joined(SENTENCES * 2)


def default_pairs() -> dict[str, list[Pair]]:
    """The fixture's pairs per split: 420 train (two too long), 31 validation (one too long), 33 test."""
    rng = random.Random(16)
    train = list(SENTENCES) + _recombined(rng, 378)
    train.insert(57, long_pair())
    train.insert(301, (SENTENCES[3][0], long_pair()[1]))  # long only on the English side
    validation = _recombined(rng, 30)
    validation.insert(11, long_pair())
    return {"train": train, "validation": validation, "test": _recombined(rng, 33)}


def _write_parquet(path: Path, pairs: list[Pair], row_group_pairs: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    column = pa.array([{data.SOURCE_LANGUAGE: de, data.TARGET_LANGUAGE: en} for de, en in pairs],
                      type=pa.struct([(data.SOURCE_LANGUAGE, pa.string()), (data.TARGET_LANGUAGE, pa.string())]))
    pq.write_table(pa.table({data.COLUMN: column}), path, row_group_size=row_group_pairs)


def write_source(root: Path, train_pairs: list[Pair] | None = None, validation_pairs: list[Pair] | None = None,
                 test_pairs: list[Pair] | None = None, train_files: int = 2,
                 row_group_pairs: int = 50) -> dict[str, list[Pair]]:
    """Write the three splits' parquet files under `root` in the Hugging Face layout (train split into
    `train_files` shards, row groups of `row_group_pairs`); returns the pairs written per split."""
    pairs = default_pairs()
    pairs.update({split: given for split, given in
                  (("train", train_pairs), ("validation", validation_pairs), ("test", test_pairs)) if given is not None})
    root = Path(root)
    shard = -(-len(pairs["train"]) // train_files)
    for index in range(train_files):
        _write_parquet(root / "wmt17" / data.CONFIG / f"train-{index:05d}-of-{train_files:05d}.parquet",
                       pairs["train"][index * shard:(index + 1) * shard], row_group_pairs)
    for split in ("validation", "test"):
        _write_parquet(root / "wmt14" / data.CONFIG / f"{split}-00000-of-00001.parquet", pairs[split], row_group_pairs)
    return pairs


TINY_VOCABULARY = 300


def prepare_tiny(data_dir: Path, source_dir: Path | None, **options) -> Path:
    """`data.prepare` of the files in `source_dir` (None: data_dir's own) with a TINY_VOCABULARY-piece
    model, no download, no pair-count check, one worker and 64-pair chunks unless `options` say otherwise."""
    settings = {"vocabulary_size": TINY_VOCABULARY, "download": False, "expected_pairs": None, "workers": 1,
                "chunk_pairs": 64, **options}
    return data.prepare(Path(data_dir), source_dir and Path(source_dir), **settings)
