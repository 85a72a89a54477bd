"""Train the colorizer: ``python train.py [experiments/NAME.yaml] [--section.key=value ...]``.

With no experiment file: on a CUDA machine the default experiment (the full hint curriculum on
OpenMoji at 256 px); on any other machine the CPU recipe, experiments/cpu.yaml (the same curriculum,
a small model at 96 px, about an hour on 2 cores). The data is prepared first if it is missing.
See README.md for the configuration keys.
"""
import os
import signal
import sys
from pathlib import Path

from colorizer.config import ConfigError, choose_experiment, parse_cli


def main(argv: list) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        print("Print the resolved configuration with: python -m colorizer.config [experiment.yaml] [--k=v ...]")
        return 0
    import torch

    argv, note = choose_experiment(argv, torch.cuda.is_available())
    try:
        cfg = parse_cli(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    main_rank = os.environ.get("RANK", "0") == "0"  # say things once, not once per torchrun worker
    if note and main_rank:
        print(note, flush=True)
    from colorizer.training import TrainingError, train  # heavy imports after the config is known good
    from colorizer.checkpoint import EXPORT_DIR, CheckpointError, ModelLoadError
    from colorizer.runtime import close_distributed

    try:
        summary = train(cfg)
    except (TrainingError, CheckpointError, ModelLoadError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C outside the loop (which turns it into a checkpoint and a clean stop)
        print("interrupted while starting or finishing, outside the training loop: this interruption saved nothing; "
              "resume with --train.resume=auto", file=sys.stderr)
        return 128 + signal.SIGINT
    finally:
        close_distributed()
    if summary["stopped_by"]:  # the checkpoint and the resume command were printed; tell shell scripts it is unfinished
        return 128 + signal.Signals[summary["stopped_by"]].value
    if main_rank:
        print(f"done: step {summary['step']}, run folder {summary['run_dir']}\n"
              f"serve it: python serve.py --checkpoint {Path(summary['run_dir']) / EXPORT_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
