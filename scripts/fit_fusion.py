"""Choose predict's face + voice fusion rule on data: the CREMA-D vote tables (issue 13 item 7).

For each of the 7,442 CREMA-D clips, people rated the voice alone, the face alone and both (about 10 votes
each). Each candidate rule pools the face-only and voice-only vote shares; it is scored on actors held out
(10 folds over the 91 actors) by how well it predicts the audio-visual votes (per-vote cross-entropy, nats),
how often its argmax is the audio-visual majority, and how often it is the acted emotion
(:mod:`affectfuse.inference.fusion_fit`). Prints a Markdown table and the weights predict ships
(``affectfuse.inference.fusion.FUSION_WEIGHTS``): the best log-linear fit's ``a / (a + b)``, ``b / (a + b)``.

Usage::

    python scripts/fit_fusion.py [--votes ../shared/data/crema-d/tabulatedVotes.csv] [--folds 10]
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALPHAS = (0.25, 0.5, 1.0)
FIXED = [("face only", "linear", (1.0,)), ("voice only", "linear", (0.0,)),
         ("mean 0.5 / 0.5 (the rule before)", "linear", (0.5,)),
         ("product of experts (a = b = 1)", "loglinear", (1.0, 1.0))]
FITTED = [("weighted mean, w fitted", "linear"), ("geometric pool, w fitted (a + b = 1)", "geometric"),
          ("log-linear pool, a and b fitted", "loglinear")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--votes", type=Path,
                        default=ROOT.parent / "shared" / "data" / "crema-d" / "tabulatedVotes.csv")
    parser.add_argument("--folds", type=int, default=10)
    args = parser.parse_args(argv)

    from affectfuse.inference.fusion import FUSION_WEIGHTS
    from affectfuse.inference.fusion_fit import cross_validate, read_crema_votes, shipped_weights

    t = read_crema_votes(args.votes)
    print(f"{len(t.clips)} clips, {len(set(t.actors))} actors, {int(t.av.sum())} audio-visual votes; "
          f"{args.folds} folds over actors; the audio-visual raters' own majority is the acted emotion for "
          f"{(t.av.argmax(1) == t.labels).mean():.3f} of the clips\n")
    print("| rule | alpha | cross-entropy (nats/vote) | = AV majority | = acted emotion | parameters (all clips) "
          "| parameters per fold (min-max) |")
    print("|---|---|---|---|---|---|---|")
    best = None
    for alpha in ALPHAS:
        runs = [(name, cross_validate(t.face, t.voice, t.av, t.labels, t.actors, rule, alpha, args.folds, fixed))
                for name, rule, fixed in FIXED]
        runs += [(name, cross_validate(t.face, t.voice, t.av, t.labels, t.actors, rule, alpha, args.folds))
                 for name, rule in FITTED]
        for name, r in runs:
            spread = " ".join(f"{min(p[i] for p in r.fold_params):.3f}-{max(p[i] for p in r.fold_params):.3f}"
                              for i in range(len(r.params))) if name in dict(FITTED) else "fixed"
            print(f"| {name} | {alpha:g} | {r.cross_entropy:.4f} | {r.agrees_av:.3f} | {r.label_accuracy:.3f} | "
                  f"{', '.join(f'{p:.3f}' for p in r.params)} | {spread} |")
            fitted = r.rule == "loglinear" and name in dict(FITTED)
            if fitted and (best is None or r.cross_entropy < best.cross_entropy):
                best = r
    weights = shipped_weights(best.params)
    print(f"\nbest: log-linear pool at alpha {best.alpha:g} (held-out cross-entropy {best.cross_entropy:.4f}); "
          f"a = {best.params[0]:.3f}, b = {best.params[1]:.3f} -> face, voice weights {weights[0]:.2f}, "
          f"{weights[1]:.2f}")
    print(f"shipped (affectfuse.inference.fusion.FUSION_WEIGHTS): {FUSION_WEIGHTS}"
          f"{'' if tuple(weights) == tuple(FUSION_WEIGHTS) else '  <- DIFFERS: update it'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
