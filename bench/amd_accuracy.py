"""Accuracy of answering-machine detection (core/media/amd.py) on a generated, labelled set of calls:

    python bench/amd_accuracy.py                 # the default set: 960 clips, seeds 1000 and up
    python bench/amd_accuracy.py --per-cell 10 --set max_greeting=2.2 --set after_greeting_silence=1.0
    python bench/amd_accuracy.py --per-cell 5 --sweep max_greeting=1.5,1.9,2.5,3.0

The clips come from the generator of tests/test_amd.py (syllables at about 4 Hz, harmonic or noisy, in
words and phrases; it has speech's cadence, not its sound). Each cell of (class × background) draws
``--per-cell`` clips with their own seed; the backgrounds are clean and steady white, pink or hum noise at
an SNR of 30, 20, 10 and 5 dB to the speech; every clip goes through PCMU or PCMA. Classes:

* human "hello": 0.2–1.2 s before a "Hello?" of 0.4–1.0 s, then silence (one in three says it again
  1.5–2.5 s later);
* human "intro": "Hello, this is Sam speaking": 1.2–1.8 s in two phrases, then silence;
* machine: 0.1–1.5 s of lead-in, a greeting of 2–6 s in phrases of 0.6–2.5 s with 0.15–0.6 s pauses,
  then (one in two) a beep of 0.2–0.8 s at 440–1400 Hz;
* no speech (judged apart from the accuracy): dead air and steady noise at −55 to −25 dBFS;
* and, reported apart as where cadence rules fail by design: "talker", a person whose greeting runs
  2.0–3.2 s ("Hello, Sam Jones speaking, how can I help you?"); "busy room", a "Hello?" over three
  other people talking 10–20 dB under the speaker (a television, an open-plan office); "short
  machine", a greeting of 0.8–1.8 s with a beep one time in two; "pausing machine", a first phrase of
  0.6–1.5 s, a pause of 0.8–1.5 s, then the rest.

Printed: the confusion matrix, accuracy over people and machines (NOTSURE counts as a miss), the
false-machine rate (people called machines: the call is hung up on a person), the machine-detection
rate, the mean and 95th-percentile time to a decision per class, the figures per background, the
clips that went wrong (with their parameters, to replay), and the detector's cost per second of audio.
The defaults of AmdConfig were set by looking at clips of the same generator (the seeds of
tests/test_amd.py and 0–999 here): these figures are on fresh seeds of the same distribution, so they
say how the rules fit this synthetic world; real calls will do worse.

``test_detector_cost`` is the same cost measured with pytest-benchmark:
    python -m pytest bench/amd_accuracy.py --benchmark-enable
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import msgspec
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.media.amd import HUMAN, MACHINE, NOTSURE, AmdConfig, AnsweringMachineDetector, BeepHeard  # noqa: E402
from tests.test_amd import Scene, detect, human_hello, human_intro, machine  # noqa: E402

LENGTH = 10.0   # seconds of audio per clip: past every beep (lead-in 1.5 + greeting 6 + gap 0.8 + beep)
BACKGROUNDS = [("clean", None, "white")] + [
    (f"{kind} {snr:g} dB", snr, kind) for snr in (30.0, 20.0, 10.0, 5.0) for kind in ("white", "pink", "hum")
]
SPEECH_CLASSES = ("hello", "intro", "machine")
# Outside what cadence rules can separate, drawn to show where they fail (reported apart):
HARD_CLASSES = ("talker", "busy room", "short machine", "pausing machine")
TRUTH = {"hello": HUMAN, "intro": HUMAN, "machine": MACHINE,
         "talker": HUMAN, "busy room": HUMAN, "short machine": MACHINE, "pausing machine": MACHINE}


def draw(kind: str, seed: int, snr: float | None, noise_kind: str) -> tuple[np.ndarray, dict]:
    """One labelled clip: its samples and the parameters that made it."""
    rng = np.random.default_rng(seed)
    codec = ("PCMU", "PCMA")[int(rng.integers(2))]
    voice = {"speech_level": float(rng.uniform(-35.0, -16.0)), "f0": float(rng.uniform(90.0, 250.0))}
    if kind == "hello":
        p = {"delay": rng.uniform(0.2, 1.2), "said": rng.uniform(0.4, 1.0)}
        scene = human_hello(rng, **p, **voice)
        if rng.random() < 1 / 3:
            p["again"] = rng.uniform(1.5, 2.5)
            scene.silence(p["again"]).say(rng.uniform(0.4, 0.8))
    elif kind == "intro":
        total = rng.uniform(1.2, 1.8)
        hello, pause = rng.uniform(0.4, 0.6), rng.uniform(0.1, 0.25)
        p = {"delay": rng.uniform(0.2, 1.0), "hello": hello, "pause": pause, "rest": total - hello - pause}
        scene = human_intro(rng, **p, **voice)
    elif kind == "machine":
        greeting = rng.uniform(2.0, 6.0)
        phrases, pauses, used = [], [], 0.0
        while True:
            d = min(rng.uniform(0.6, 2.5), greeting - used)
            phrases.append(d)
            used += d
            pause = rng.uniform(0.15, 0.6)
            if used + pause >= greeting - 0.3:
                phrases[-1] += greeting - used   # the last phrase takes what is left
                break
            pauses.append(pause)
            used += pause
        beep = float(rng.choice([440.0, 850.0, 1000.0, 1400.0])) if rng.random() < 0.5 else None
        p = {"delay": rng.uniform(0.1, 1.5), "phrases": tuple(phrases), "pauses": tuple(pauses) or (0.3,),
             "beep": beep}
        scene = machine(rng, **{**p, "beep": None}, **voice)
        if beep:
            p["beep_gap"], p["beep_len"] = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8)
            scene.silence(p["beep_gap"]).beep(beep, p["beep_len"], level=float(rng.uniform(-22.0, -10.0)))
    elif kind == "talker":
        p = {"delay": rng.uniform(0.2, 1.0), "hello": rng.uniform(0.4, 0.7), "pause": rng.uniform(0.1, 0.3),
             "rest": rng.uniform(1.4, 2.2)}
        scene = human_intro(rng, **p, **voice)
    elif kind == "short machine":
        beep = float(rng.choice([440.0, 850.0, 1000.0, 1400.0])) if rng.random() < 0.5 else None
        p = {"delay": rng.uniform(0.1, 1.0), "phrases": (rng.uniform(0.8, 1.8),), "beep": beep}
        scene = machine(rng, **{**p, "beep": None}, **voice)
        if beep:
            p["beep_gap"], p["beep_len"] = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8)
            scene.silence(p["beep_gap"]).beep(beep, p["beep_len"], level=float(rng.uniform(-22.0, -10.0)))
    elif kind == "pausing machine":
        p = {"delay": rng.uniform(0.1, 1.0), "phrases": (rng.uniform(0.6, 1.5), rng.uniform(1.5, 3.0)),
             "pauses": (rng.uniform(0.8, 1.5),), "beep": None}
        scene = machine(rng, **p, **voice)
    elif kind == "busy room":
        p = {"delay": rng.uniform(0.2, 1.2), "said": rng.uniform(0.4, 1.0), "babble": rng.uniform(10.0, 20.0)}
        scene = human_hello(rng, delay=p["delay"], said=p["said"], **voice)
        p = {k: round(v, 3) for k, v in p.items()}
        samples = scene.render(LENGTH, snr=snr, noise_kind=noise_kind, babble=p["babble"], codec=codec)
        return samples, {**p, **{k: round(v, 1) for k, v in voice.items()}, "codec": codec}
    elif kind == "dead air":
        p, scene = {}, Scene(rng)
        return scene.render(LENGTH, codec=codec), {"codec": codec}
    else:   # steady noise
        p = {"level": rng.uniform(-55.0, -25.0)}
        return Scene(rng).render(LENGTH, noise_level=p["level"], noise_kind=noise_kind, codec=codec), \
            {**p, "codec": codec, "noise": noise_kind}
    p = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in p.items()}
    samples = scene.render(LENGTH, snr=snr, noise_kind=noise_kind, codec=codec)
    return samples, {**p, **{k: round(v, 1) for k, v in voice.items()}, "codec": codec}


def labelled_set(per_cell: int, first_seed: int):
    """(class, background, seed, samples, parameters) for every clip."""
    seed = first_seed
    for kind in SPEECH_CLASSES + HARD_CLASSES:
        for name, snr, noise_kind in BACKGROUNDS:
            for _ in range(per_cell):
                samples, p = draw(kind, seed, snr, noise_kind)
                yield kind, name, seed, samples, p
                seed += 1
    for kind, backgrounds in (("dead air", [("none", None, "white")]),
                              ("noise", [(k, None, k) for k in ("white", "pink", "hum")])):
        for name, snr, noise_kind in backgrounds:
            for _ in range(per_cell * 2):
                samples, p = draw(kind, seed, snr, noise_kind)
                yield kind, name, seed, samples, p
                seed += 1


def measure_cost(config: AmdConfig, clips: list[np.ndarray]) -> float:
    """Seconds of CPU per second of audio, feeding 20 ms frames one at a time with no early stop."""
    frames = sum(len(c) // 160 for c in clips)
    never = msgspec.structs.replace(config, total_analysis_time=60.0, initial_silence=60.0, max_greeting=60.0,
                                    max_words=100, max_word_length=60.0, after_greeting_silence=60.0, beep=True)
    started = time.process_time()
    for clip in clips:
        detector = AnsweringMachineDetector(never)
        for i in range(0, len(clip) - 159, 160):
            detector.feed(clip[i:i + 160])
    return (time.process_time() - started) / (frames * 0.02)


def _setting(item: str, many: bool = False):
    key, _, text = item.partition("=")
    decode = lambda v: v if v.isalpha() and v not in ("true", "false") else msgspec.json.decode(v)  # noqa: E731
    return key, [decode(v) for v in text.split(",")] if many else decode(text)


def sweep(config: AmdConfig, key: str, values: list, per_cell: int, first_seed: int) -> None:
    """Each clip judged under each value of ``key``: what one threshold trades."""
    configs = [msgspec.convert({**msgspec.structs.asdict(config), key: v}, AmdConfig) for v in values]
    tally = [defaultdict(Counter) for _ in configs]
    times = [defaultdict(list) for _ in configs]
    for kind, _background, _seed, samples, _p in labelled_set(per_cell, first_seed):
        if kind not in TRUTH:
            continue
        for i, c in enumerate(configs):
            d = detect(samples, c).decision
            tally[i][kind][d.verdict] += 1
            times[i][TRUTH[kind]].append(d.at)
    print(f"sweep of {key} over {values}, {per_cell} clips per class and background, seeds from {first_seed}")
    print("false machine: people called MACHINE; missed: machines not called MACHINE; time: mean to decision")
    print(f"{key:>24} | {'accuracy':>8} {'false M':>8} {'missed':>7} {'time H':>7} {'time M':>7} | "
          f"{'talker':>7} {'busy rm':>7} {'short M':>7} {'pause M':>7}")
    for value, t, tm in zip(values, tally, times):
        def rate(kinds, verdict, t=t):
            return sum(t[k][verdict] for k in kinds) / sum(sum(t[k].values()) for k in kinds)
        people, machines = ("hello", "intro"), ("machine",)
        right = sum(t[k][TRUTH[k]] for k in SPEECH_CLASSES) / sum(sum(t[k].values()) for k in SPEECH_CLASSES)
        print(f"{value!s:>24} | {right:>8.1%} {rate(people, MACHINE):>8.1%} "
              f"{1 - rate(machines, MACHINE):>7.1%} "
              f"{np.mean(tm[HUMAN]):>6.2f}s {np.mean(tm[MACHINE]):>6.2f}s | "
              f"{rate(('talker',), MACHINE):>7.1%} {rate(('busy room',), MACHINE):>7.1%} "
              f"{1 - rate(('short machine',), MACHINE):>7.1%} {1 - rate(('pausing machine',), MACHINE):>7.1%}")
    print("(talker, busy rm: false-machine rate; short M, pause M: missed rate)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-cell", type=int, default=20, help="clips per class and background (default 20)")
    parser.add_argument("--seed", type=int, default=1000,
                        help="first seed (default 1000; 0-999 were for tuning)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an AmdConfig field, e.g. max_greeting=2.2 (repeatable)")
    parser.add_argument("--show", type=int, default=12, help="wrong clips to list (default 12)")
    parser.add_argument("--sweep", metavar="KEY=V1,V2,...",
                        help="judge every clip with each value of one AmdConfig field; print the trade-off")
    args = parser.parse_args(argv)
    config = msgspec.convert({k: v for k, v in map(_setting, args.set)}, AmdConfig)
    if args.sweep:
        key, values = _setting(args.sweep, many=True)
        sweep(config, key, values, args.per_cell, args.seed)
        return

    confusion: dict[str, Counter] = defaultdict(Counter)
    by_background: dict[str, Counter] = defaultdict(Counter)
    times: dict[str, list[float]] = defaultdict(list)
    reasons: dict[str, Counter] = defaultdict(Counter)
    wrong = []
    cost_clips = []
    beeps: Counter = Counter()
    beep_config = msgspec.structs.replace(config, listen_for_beep=True, beep_wait=LENGTH)
    started = time.perf_counter()
    for kind, background, seed, samples, p in labelled_set(args.per_cell, args.seed):
        d = detect(samples, config).decision
        confusion[kind][d.verdict] += 1
        reasons[kind][f"{d.verdict} {d.reason}"] += 1
        times[kind].append(d.at)
        if kind in SPEECH_CLASSES:
            by_background[background]["clips"] += 1
            by_background[background]["right"] += d.verdict == TRUTH[kind]
            if TRUTH[kind] == HUMAN:
                by_background[background]["people"] += 1
                by_background[background]["false machine"] += d.verdict == MACHINE
            if d.verdict != TRUTH[kind]:
                wrong.append((kind, background, seed, d, p))
        if kind in ("hello", "intro", "machine"):
            # The beep for a voicemail drop: listened for after the decision.
            listener = detect(samples, beep_config)
            heard = [e for e in iter(listener.next_event, None) if isinstance(e, BeepHeard)]
            if p.get("beep"):
                greeting = sum(p["phrases"]) + sum(p["pauses"][:len(p["phrases"]) - 1])
                start = p["delay"] + greeting + p["beep_gap"]
                beeps["with a beep"] += 1
                beeps["heard"] += bool(heard)
                beeps["heard on time"] += bool(heard) and abs(heard[0].start - start) <= 0.04
            else:
                beeps["without"] += 1
                beeps["false"] += bool(heard)
        if len(cost_clips) < 40 and seed % 7 == 0:
            cost_clips.append(samples)
    elapsed = time.perf_counter() - started

    total = sum(sum(c.values()) for c in confusion.values())
    print(f"AmdConfig: {msgspec.json.encode(config).decode()}")
    print(f"{total} clips of {LENGTH:g} s, seeds {args.seed}..{args.seed + total - 1}, "
          f"generated and judged in {elapsed:.1f} s\n")
    print(f"{'truth':<22}{'clips':>7}{'HUMAN':>8}{'MACHINE':>9}{'NOTSURE':>9}   decision time: mean  p95")
    for kind in (*SPEECH_CLASSES, "dead air", "noise", *HARD_CLASSES):
        if kind == HARD_CLASSES[0]:
            print("-- outside the rules' reach (not in the figures below):")
        c, n = confusion[kind], sum(confusion[kind].values())
        label = f"{kind} ({TRUTH[kind][0]})" if kind in TRUTH else f"{kind} (none)"
        t = np.array(times[kind])
        print(f"{label:<22}{n:>7}{c[HUMAN]:>8}{c[MACHINE]:>9}{c[NOTSURE]:>9}   "
              f"{t.mean():>18.2f} s {np.percentile(t, 95):.2f} s")

    people = confusion["hello"] + confusion["intro"]
    n_people, n_machines = sum(people.values()), sum(confusion["machine"].values())
    right = people[HUMAN] + confusion["machine"][MACHINE]
    print(f"\naccuracy (people and machines, NOTSURE a miss): {right}/{n_people + n_machines} = "
          f"{right / (n_people + n_machines):.1%}")
    print(f"false-machine rate (people called MACHINE):      {people[MACHINE]}/{n_people} = "
          f"{people[MACHINE] / n_people:.1%}")
    print(f"people called NOTSURE:                           {people[NOTSURE]}/{n_people} = "
          f"{people[NOTSURE] / n_people:.1%}")
    print(f"machines detected (MACHINE):                     {confusion['machine'][MACHINE]}/{n_machines} = "
          f"{confusion['machine'][MACHINE] / n_machines:.1%}")
    print(f"machines called HUMAN:                           {confusion['machine'][HUMAN]}/{n_machines} = "
          f"{confusion['machine'][HUMAN] / n_machines:.1%}")
    human_times = np.array(times["hello"] + times["intro"])
    print(f"mean time to decision: people {human_times.mean():.2f} s, "
          f"machines {np.mean(times['machine']):.2f} s "
          f"(audio from the answer)")

    print(f"beep (listen_for_beep, machines' beeps {config.beep_min_duration:g} s or longer): heard "
          f"{beeps['heard']}/{beeps['with a beep']}, its start within 40 ms {beeps['heard on time']}; "
          f"a beep reported in {beeps['false']}/{beeps['without']} clips without one (people and machines)")

    print("\nreasons:")
    for kind in (*SPEECH_CLASSES, "dead air", "noise", *HARD_CLASSES):
        print(f"  {kind:<16} " + ", ".join(f"{r} {n}" for r, n in reasons[kind].most_common()))

    print(f"\n{'background':<16}{'clips':>6}{'accuracy':>10}{'false machine':>15}")
    for name, _, _ in BACKGROUNDS:
        b = by_background[name]
        print(f"{name:<16}{b['clips']:>6}{b['right'] / b['clips']:>10.1%}"
              f"{b['false machine'] / b['people']:>15.1%}")

    if wrong and args.show:
        print(f"\nwrong ({len(wrong)}; first {min(args.show, len(wrong))}, people called MACHINE first):")
        wrong.sort(key=lambda w: (w[3].verdict != MACHINE, w[0]))
        for kind, background, seed, d, p in wrong[: args.show]:
            print(f"  seed {seed} {kind} [{background}] → {d.verdict} {d.reason} at {d.at:.2f} s "
                  f"(greeting {d.greeting:.2f} s, {d.words} words) {p}")

    print(f"\ncost, {len(cost_clips)} clips fed 20 ms at a time, every rule and the beep on, same run:")
    for batch in sorted({1, config.analysis_batch}):
        cost = measure_cost(msgspec.structs.replace(config, analysis_batch=batch), cost_clips)
        print(f"  analysis_batch={batch}: {cost * 1e6:.0f} µs of CPU per second of audio "
              f"({cost * 1e6 / 50:.1f} µs per frame): one core keeps up with {1 / cost:,.0f} calls at once")


def test_detector_cost(benchmark):
    """One 20 ms frame of speech fed to a detector that never decides (every rule and the beep on)."""
    from tests.test_amd import human_intro as intro
    clip = intro(np.random.default_rng(0)).render(6.0, snr=20.0)
    frames = [clip[i:i + 160] for i in range(0, len(clip) - 159, 160)]
    never = AmdConfig(total_analysis_time=60.0, initial_silence=60.0, max_greeting=60.0, max_words=100,
                      max_word_length=60.0, after_greeting_silence=60.0)
    state = {"detector": AnsweringMachineDetector(never), "i": 0}

    def one_frame():
        if state["i"] == len(frames):
            state["detector"], state["i"] = AnsweringMachineDetector(never), 0
        state["detector"].feed(frames[state["i"]])
        state["i"] += 1

    benchmark(one_frame)


if __name__ == "__main__":
    main()
