"""Captions (VALOR-like) and questions (MUSIC-AVQA-like) about a generated scene.

Questions use MUSIC-AVQA's wording style: a template with placeholders (`<Object>`,
`<LR>`, `<LRer>`, `<FL>`, `<LL>`) and `templ_values` filling them left to right;
instrument names are spelled as MUSIC-AVQA answers spell them ("acoustic_guitar").
Each type needs what its name says: Audio questions are answered by the sound
alone, Visual ones by the picture alone, Audio-Visual ones need both.

Answers come first. Every template declares its answer set; the generator draws the
wanted answer uniformly from it and then looks for a scene that answers it (see
`synth.generate_synthetic`). `Template.ask` lists every question the template can ask
about a scene with its answer, so a question alone tells nothing beyond its template's
answer set: which placeholder values get asked is independent of the answer.
Some templates need fine detail that coarse token selection averages away: the
order of onsets in time (`playing longer`, `first/last`) and the horizontal position
of an instrument (`left / middle / right`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from configs.schema import QUESTION_SETS
from foundation.data.formats import NUMBERS
from foundation.data.synth_scene import LEVELS, Instrument, Scene, Source

SLOT_WORDS = {"left": "on the left", "middle": "in the middle", "right": "on the right"}
YES_NO = ("yes", "no")
SLOT_ANSWERS = ("left", "middle", "right")
# (templ_values, answer): one question the template can ask about a scene
Asked = tuple[list[str], str]


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _loudness(s: Source) -> int:
    return s.level if s.sounding else -1


def _playing_quarters(s: Source) -> int:
    return 4 - s.onset_quarters if s.sounding else 0


def _unique_extreme(sources: list[Source], key: Callable[[Source], int], first: bool) -> Source | None:
    """The one source with the smallest (first=True) or largest key, or None on a tie."""
    if not sources:
        return None
    best = (min if first else max)(key(s) for s in sources)
    winners = [s for s in sources if key(s) == best]
    return winners[0] if len(winners) == 1 else None


@dataclass(frozen=True)
class Template:
    qtype: str
    text: str  # MUSIC-AVQA question_content
    answers: tuple[str, ...]  # the answer set, drawn from uniformly
    ask: Callable[[Scene, tuple[str, ...]], list[Asked]]  # every askable (values, answer)


def _pairs(sources: list[Source], keep: Callable[[Source, Source], bool]) -> list[tuple[Source, Source]]:
    """Ordered pairs (a, b), a != b, with keep(a, b); both orders appear."""
    return [(a, b) for a in sources for b in sources if a is not b and keep(a, b)]


def _count(n: int) -> str:
    return NUMBERS[n]


# ---------------------------------------------------------------- what each template can ask


def _heard(sc, names):
    return [([], _count(len(sc.sounding)))]


def _is_there_sound(sc, names):
    sounding = {s.instrument for s in sc.sounding}
    return [([names[i]], _yes_no(i in sounding)) for i in range(len(names))]


def _louder_obj(sc, names):
    return [([names[a.instrument], names[b.instrument]], _yes_no(a.level > b.level))
            for a, b in _pairs(sc.sounding, lambda a, b: a.level != b.level)]


def _longer_obj(sc, names):
    return [([names[a.instrument], names[b.instrument]], _yes_no(a.onset_quarters < b.onset_quarters))
            for a, b in _pairs(sc.sounding, lambda a, b: a.onset_quarters != b.onset_quarters)]


def _seen_types(sc, names):
    return [([], _count(len(sc.visible)))]


def _is_there_seen(sc, names):
    seen = {s.instrument for s in sc.visible}
    return [([names[i]], _yes_no(i in seen)) for i in range(len(names))]


def _where(sc, names):
    return [([names[s.instrument]], s.slot) for s in sc.visible]


def _extreme_kind(sc, names):
    seen = sc.visible  # ordered left to right
    if len(seen) < 2:
        return []
    return [(["leftest"], names[seen[0].instrument]), (["rightest"], names[seen[-1].instrument])]


def _making_sound(sc, names):
    return [([names[s.instrument]], _yes_no(s.sounding)) for s in sc.visible]


def _from_video(sc, names):
    return [([], _yes_no(all(s.visible for s in sc.sounding)))]


def _sounding_in_video(sc, names):
    return [([], _count(sum(s.sounding for s in sc.visible)))]


def _where_loudest(sc, names):
    s = _unique_extreme(sc.sounding, lambda s: s.level, first=False)
    if s is None or not s.visible or len(sc.visible) < 2:
        return []
    return [(["loudest"], s.slot)]


def _louder_slot(sc, names):
    return [([a.slot, b.slot], _yes_no(_loudness(a) > _loudness(b)))
            for a, b in _pairs(sc.visible, lambda a, b: _loudness(a) != _loudness(b))]


def _longer_slot(sc, names):
    return [([a.slot, b.slot], _yes_no(_playing_quarters(a) > _playing_quarters(b)))
            for a, b in _pairs(sc.visible, lambda a, b: _playing_quarters(a) != _playing_quarters(b))]


def _where_first_last(sc, names):
    out = []
    for word, first in (("first", True), ("last", False)):
        s = _unique_extreme(sc.sounding, lambda s: s.onset_quarters, first=first)
        if s is not None and s.visible and len(sc.visible) >= 2:
            out.append(([word], s.slot))
    return out


def _before_slot(sc, names):
    both = [s for s in sc.visible if s.sounding]
    return [([a.slot, b.slot], _yes_no(a.onset_quarters < b.onset_quarters))
            for a, b in _pairs(both, lambda a, b: a.onset_quarters != b.onset_quarters)]


def _same_start(sc, names):
    if len(sc.sounding) < 2:
        return []
    return [([], _yes_no(len({s.onset_quarters for s in sc.sounding}) == 1))]


def _outermost(first: bool):
    def ask(sc, names):
        seen = sc.visible  # ordered left to right
        return [([], (seen[0] if first else seen[-1]).slot)] if seen else []
    return ask



def templates(num_instruments: int, names: tuple[str, ...], question_set: str = "scene") -> tuple[Template, ...]:
    """The benchmark's templates with their answer sets.

    `scene`: questions about the whole scene (counts, timing, outermost positions, whether the
    sound has a visible source), no placeholders: each still needs the audio, the video or
    both, but not binding a named instrument or slot to the media. Measured on the tiny
    preset, the tiny LM learns these from the media while it stays at chance on binding
    questions even when it reads the clean caption (`tokcom oracle`, docs/results.md).
    `musicavqa`: sixteen templates after MUSIC-AVQA's nine types, most of them naming an
    instrument (<Object>) or a slot (<LR>) that the answer must be bound to.
    """
    if question_set == "scene":
        return _scene_templates()
    if question_set == "musicavqa":
        return _musicavqa_templates(num_instruments, names)
    raise ValueError(f"unknown question set {question_set!r}; use one of {QUESTION_SETS}")


def _scene_templates() -> tuple[Template, ...]:
    counts = tuple(NUMBERS[1:4])
    return (
        Template("A-Count", "How many musical instruments were heard throughout the video?", counts, _heard),
        Template("A-Cmp", "Do all the instruments start playing at the same time?", YES_NO, _same_start),
        Template("V-Count", "How many types of musical instruments appeared in the entire video?", counts,
                 _seen_types),
        Template("V-Loc", "Where is the leftmost instrument?", SLOT_ANSWERS, _outermost(first=True)),
        Template("V-Loc", "Where is the rightmost instrument?", SLOT_ANSWERS, _outermost(first=False)),
        Template("AV-Ext", "Is this sound from the instrument in the video?", YES_NO, _from_video),
        Template("AV-Count", "How many instruments are sounding in the video?", tuple(NUMBERS[0:4]),
                 _sounding_in_video),
    )


def _musicavqa_templates(num_instruments: int, names: tuple[str, ...]) -> tuple[Template, ...]:
    counts = tuple(NUMBERS[1:4])
    return (
        Template("A-Count", "How many musical instruments were heard throughout the video?", counts, _heard),
        Template("A-Count", "Is there a <Object> sound?", YES_NO, _is_there_sound),
        Template("A-Cmp", "Is the <Object> louder than the <Object>?", YES_NO, _louder_obj),
        Template("A-Cmp", "Is the <Object> playing longer than the <Object>?", YES_NO, _longer_obj),
        Template("V-Count", "How many types of musical instruments appeared in the entire video?", counts,
                 _seen_types),
        Template("V-Count", "Is there a <Object> in the entire video?", YES_NO, _is_there_seen),
        Template("V-Loc", "Where is the <Object>?", SLOT_ANSWERS, _where),
        Template("V-Loc", "What kind of instrument is the <LRer> instrument?", names[:num_instruments],
                 _extreme_kind),
        Template("AV-Ext", "Is the <Object> in the video making sound?", YES_NO, _making_sound),
        Template("AV-Ext", "Is this sound from the instrument in the video?", YES_NO, _from_video),
        Template("AV-Count", "How many instruments are sounding in the video?", tuple(NUMBERS[0:4]),
                 _sounding_in_video),
        Template("AV-Loc", "Where is the <LL> instrument?", SLOT_ANSWERS, _where_loudest),
        Template("AV-Cmp", "Is the instrument on the <LR> louder than the instrument on the <LR>?", YES_NO,
                 _louder_slot),
        Template("AV-Cmp", "Is the instrument on the <LR> playing longer than the instrument on the <LR>?",
                 YES_NO, _longer_slot),
        Template("AV-Temp", "Where is the <FL> sounding instrument?", SLOT_ANSWERS, _where_first_last),
        Template("AV-Temp", "Does the instrument on the <LR> start before the instrument on the <LR>?", YES_NO,
                 _before_slot),
    )


def answer_with(template: Template, sc: Scene, names: tuple[str, ...], answer: str,
                rng: np.random.Generator) -> list[str] | None:
    """Placeholder values for a question of `template` about `sc` whose answer is `answer`
    (one of the matching ones, uniformly), or None when the scene cannot give that answer."""
    fits = [values for values, a in template.ask(sc, names) if a == answer]
    return fits[int(rng.integers(len(fits)))] if fits else None


# ---------------------------------------------------------------- captions


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def clip_caption(sc: Scene, table: tuple[Instrument, ...]) -> str:
    """One short sentence: each instrument, how loud it plays (or that it is silent), and where.

    E.g. "A loud cello on the left, a silent flute in the middle and a banjo off screen."
    (a moderate level goes unsaid, which keeps captions short).
    """
    parts = []
    for s in sc.sources:
        where = SLOT_WORDS[s.slot] if s.visible else "off screen"
        level = LEVELS[s.level][0] if s.sounding else "silent"
        adjective = "" if level == "moderate" else level + " "
        parts.append(f"{_a(adjective + table[s.instrument].spoken)} {where}")
    text = f"{_join(parts)}."
    return text[0].upper() + text[1:]
