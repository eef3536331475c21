"""Captions (VALOR-like) and questions (MUSIC-AVQA-like) about a generated scene.

Questions use MUSIC-AVQA's wording style: a template with placeholders (`<Object>`,
`<LR>`, `<LRer>`, `<FL>`, `<LL>`) and `templ_values` filling them left to right;
instrument names are spelled as MUSIC-AVQA answers spell them ("acoustic_guitar").
Each type needs what its name says: Audio questions are answered by the sound
alone, Visual ones by the picture alone, Audio-Visual ones need both. Yes/no
questions pick the wanted answer by a coin flip first, so answers stay balanced.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

import numpy as np

from foundation.data.formats import NUMBERS, QTYPES
from foundation.data.synth_scene import LEVELS, Instrument, Scene, Source

# (template, templ_values, answer), or None when the scene cannot support the question
Built = tuple[str, list[str], str] | None
Builder = Callable[[Scene, tuple[str, ...], np.random.Generator], Built]
SLOT_WORDS = {"left": "on the left", "middle": "in the middle", "right": "on the right"}


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _pick(rng: np.random.Generator, items: list):
    return items[int(rng.integers(len(items)))] if items else None


def _ordered_pairs(items: list, keep: Callable[[object, object], bool]) -> list[tuple]:
    """All ordered pairs (a, b), a != b, with keep(a, b); both orders appear, so a coin is built in."""
    return [(a, b) for a in items for b in items if a is not b and keep(a, b)]


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


def _membership(universe: int, members: set[int], decoys: list[int], rng: np.random.Generator,
                template: str, names: tuple[str, ...]) -> Built:
    """'Is there X?' with a balanced answer; 'no' prefers a decoy the other modality shows."""
    if rng.random() < 0.5:
        x = _pick(rng, sorted(members))
    else:
        pool = decoys if decoys and rng.random() < 0.5 else [i for i in range(universe) if i not in members]
        x = _pick(rng, pool)
    return None if x is None else (template, [names[x]], _yes_no(x in members))


def _pair_membership(universe: int, members: set[int], rng: np.random.Generator,
                     template: str, names: tuple[str, ...]) -> Built:
    """'Are there X and Y?': yes iff both are members; balanced yes/no."""
    inside = sorted(members)
    outside = [i for i in range(universe) if i not in members]
    if rng.random() < 0.5:
        if len(inside) < 2:
            return None
        pair = [int(i) for i in rng.choice(inside, size=2, replace=False)]
    else:
        if not inside or not outside:
            return None
        pair = [_pick(rng, inside), _pick(rng, outside)]
        rng.shuffle(pair)
    return template, [names[i] for i in pair], _yes_no(all(i in members for i in pair))


# ---------------------------------------------------------------- Audio


def a_count_heard(sc: Scene, names: tuple[str, ...], rng: np.random.Generator) -> Built:
    return "How many musical instruments were heard throughout the video?", [], NUMBERS[len(sc.sounding)]


def a_count_is_there(sc: Scene, names: tuple[str, ...], rng: np.random.Generator) -> Built:
    silent_seen = [s.instrument for s in sc.visible if not s.sounding]
    return _membership(len(names), {s.instrument for s in sc.sounding}, silent_seen, rng,
                       "Is there a <Object> sound?", names)


def a_count_pair(sc: Scene, names: tuple[str, ...], rng: np.random.Generator) -> Built:
    return _pair_membership(len(names), {s.instrument for s in sc.sounding}, rng,
                            "Are there <Object> and <Object> sound?", names)


def a_cmp_louder(sc: Scene, names: tuple[str, ...], rng: np.random.Generator) -> Built:
    pair = _pick(rng, _ordered_pairs(sc.sounding, lambda a, b: a.level != b.level))
    if pair is None:
        return None
    a, b = pair
    return ("Is the <Object> louder than the <Object>?", [names[a.instrument], names[b.instrument]],
            _yes_no(a.level > b.level))


def a_cmp_longer(sc: Scene, names: tuple[str, ...], rng: np.random.Generator) -> Built:
    pair = _pick(rng, _ordered_pairs(sc.sounding, lambda a, b: a.onset_quarters != b.onset_quarters))
    if pair is None:
        return None
    a, b = pair
    return ("Is the <Object> playing longer than the <Object>?", [names[a.instrument], names[b.instrument]],
            _yes_no(a.onset_quarters < b.onset_quarters))


# ---------------------------------------------------------------- Visual


def v_count_types(sc: Scene, names: tuple[str, ...], rng: np.random.Generator) -> Built:
    return ("How many types of musical instruments appeared in the entire video?", [],
            NUMBERS[len(sc.visible)])


def v_count_is_there(sc: Scene, names: tuple[str, ...], rng: np.random.Generator) -> Built:
    heard_unseen = [s.instrument for s in sc.sources if not s.visible]
    return _membership(len(names), {s.instrument for s in sc.visible}, heard_unseen, rng,
                       "Is there a <Object> in the entire video?", names)


def v_count_pair(sc: Scene, names: tuple[str, ...], rng: np.random.Generator) -> Built:
    return _pair_membership(len(names), {s.instrument for s in sc.visible}, rng,
                            "Are there <Object> and <Object> instruments in the video?", names)


def v_loc_where(sc: Scene, names: tuple[str, ...], rng: np.random.Generator) -> Built:
    s = _pick(rng, sc.visible)
    return "Where is the <Object>?", [names[s.instrument]], s.slot


def v_loc_extreme(sc: Scene, names: tuple[str, ...], rng: np.random.Generator) -> Built:
    seen = sc.visible  # ordered left to right
    if len(seen) < 2:
        return None
    word, s = ("leftest", seen[0]) if rng.random() < 0.5 else ("rightest", seen[-1])
    return "What kind of instrument is the <LRer> instrument?", [word], names[s.instrument]


def v_loc_side_of(sc: Scene, names: tuple[str, ...], rng: np.random.Generator) -> Built:
    seen = sc.visible
    options = [("left", seen[i], seen[i - 1]) for i in range(1, len(seen))]
    options += [("right", seen[i], seen[i + 1]) for i in range(len(seen) - 1)]
    choice = _pick(rng, options)
    if choice is None:
        return None
    side, anchor, other = choice
    return ("What is the instrument on the <LR> of <Object>?", [side, names[anchor.instrument]],
            names[other.instrument])


# ---------------------------------------------------------------- Audio-Visual


def av_ext_making_sound(sc: Scene, names: tuple[str, ...], rng: np.random.Generator) -> Built:
    want = rng.random() < 0.5
    s = _pick(rng, [s for s in sc.visible if s.sounding == want])
    if s is None:
        return None
    return "Is the <Object> in the video making sound?", [names[s.instrument]], _yes_no(s.sounding)


def av_ext_from_video(sc: Scene, names: tuple[str, ...], rng: np.random.Generator) -> Built:
    return ("Is this sound from the instrument in the video?", [],
            _yes_no(all(s.visible for s in sc.sounding)))


def av_count_sounding(sc: Scene, names: tuple[str, ...], rng: np.random.Generator) -> Built:
    return ("How many instruments are sounding in the video?", [],
            NUMBERS[sum(s.sounding for s in sc.visible)])


def av_count_silent(sc: Scene, names: tuple[str, ...], rng: np.random.Generator) -> Built:
    return ("How many instruments in the video did not sound from beginning to end?", [],
            NUMBERS[sum(not s.sounding for s in sc.visible)])


def av_loc_loudest(sc: Scene, names: tuple[str, ...], rng: np.random.Generator) -> Built:
    s = _unique_extreme(sc.sounding, lambda s: s.level, first=False)
    if s is None or not s.visible or len(sc.visible) < 2:
        return None
    return "Where is the <LL> instrument?", ["loudest"], s.slot


def av_loc_sound_from(sc: Scene, names: tuple[str, ...], rng: np.random.Generator) -> Built:
    first = rng.random() < 0.5
    s = _unique_extreme(sc.sounding, lambda s: s.onset_quarters, first=first)
    if s is None or len(sc.visible) < 2:
        return None
    if rng.random() < 0.5:
        slot = s.slot  # None when the first/last sound is off-screen: no such question
    else:
        slot = _pick(rng, [v.slot for v in sc.visible if v is not s])
    if slot is None:
        return None
    return ("Is the <FL> sound coming from the <LR> instrument?", ["first" if first else "last", slot],
            _yes_no(slot == s.slot))


def av_cmp_louder(sc: Scene, names: tuple[str, ...], rng: np.random.Generator) -> Built:
    pair = _pick(rng, _ordered_pairs(sc.visible, lambda a, b: _loudness(a) != _loudness(b)))
    if pair is None:
        return None
    a, b = pair
    return ("Is the instrument on the <LR> louder than the instrument on the <LR>?", [a.slot, b.slot],
            _yes_no(_loudness(a) > _loudness(b)))


def av_cmp_longer(sc: Scene, names: tuple[str, ...], rng: np.random.Generator) -> Built:
    pair = _pick(rng, _ordered_pairs(sc.visible, lambda a, b: _playing_quarters(a) != _playing_quarters(b)))
    if pair is None:
        return None
    a, b = pair
    return ("Is the instrument on the <LR> playing longer than the instrument on the <LR>?",
            [a.slot, b.slot], _yes_no(_playing_quarters(a) > _playing_quarters(b)))


def av_temp_first_of_two(sc: Scene, names: tuple[str, ...], rng: np.random.Generator) -> Built:
    pair = _pick(rng, _ordered_pairs([s for s in sc.visible if s.sounding], lambda a, b: True))
    if pair is None:
        return None
    a, b = pair
    if a.onset_quarters == b.onset_quarters:
        answer = "simultaneously"
    else:
        answer = a.slot if a.onset_quarters < b.onset_quarters else b.slot
    return ("Which instrument sounds first, the instrument on the <LR> or the instrument on the <LR>?",
            [a.slot, b.slot], answer)


def av_temp_where_first_last(sc: Scene, names: tuple[str, ...], rng: np.random.Generator) -> Built:
    first = rng.random() < 0.5
    s = _unique_extreme(sc.sounding, lambda s: s.onset_quarters, first=first)
    if s is None or not s.visible or len(sc.visible) < 2:
        return None
    return "Where is the <FL> sounding instrument?", ["first" if first else "last"], s.slot


BUILDERS: dict[str, tuple[Builder, ...]] = {
    "A-Count": (a_count_heard, a_count_is_there, a_count_pair),
    "A-Cmp": (a_cmp_louder, a_cmp_longer),
    "V-Count": (v_count_types, v_count_is_there, v_count_pair),
    "V-Loc": (v_loc_where, v_loc_extreme, v_loc_side_of),
    "AV-Ext": (av_ext_making_sound, av_ext_from_video),
    "AV-Count": (av_count_sounding, av_count_silent),
    "AV-Loc": (av_loc_loudest, av_loc_sound_from),
    "AV-Cmp": (av_cmp_louder, av_cmp_longer),
    "AV-Temp": (av_temp_first_of_two, av_temp_where_first_last),
}
assert tuple(BUILDERS) == QTYPES


def clip_questions(sc: Scene, names: tuple[str, ...], k: int, rng: np.random.Generator,
                   asked_so_far: Counter) -> list[tuple[str, str, list[str], str]]:
    """Up to k distinct questions (qtype, template, templ_values, answer) about one clip.

    Types are tried rarest first (by `asked_so_far`, updated here, ties broken at
    random), so the types that fit fewer scenes still get their share.
    """
    out: list[tuple[str, str, list[str], str]] = []
    asked: set[tuple[str, tuple[str, ...]]] = set()
    for _ in range(3):  # a few passes over the nine types, in case some do not fit the scene
        ties = rng.random(len(QTYPES))
        for qtype in sorted(QTYPES, key=lambda t: (asked_so_far[t], ties[QTYPES.index(t)])):
            if len(out) == k:
                return out
            for b in rng.permutation(len(BUILDERS[qtype])):
                built = BUILDERS[qtype][int(b)](sc, names, rng)
                if built is not None and (built[0], tuple(built[1])) not in asked:
                    asked.add((built[0], tuple(built[1])))
                    asked_so_far[qtype] += 1
                    out.append((qtype, *built))
                    break
    return out


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
