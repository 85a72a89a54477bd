"""Train the colorizer: ``python train.py [experiments/NAME.yaml] [--section.key=value ...]``.

With no arguments: the default experiment (the full hint curriculum on OpenMoji at 256 px),
preparing the data first if it is missing. See README.md for the configuration keys.
"""
import signal
import sys

from colorizer.config import ConfigError, parse_cli


def main(argv: list) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        print("Print the resolved configuration with: python -m colorizer.config [experiment.yaml] [--k=v ...]")
        return 0
    try:
        cfg = parse_cli(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from colorizer.training import TrainingError, train  # heavy imports after the config is known good
    from colorizer.checkpoint import CheckpointError

    try:
        summary = train(cfg)
    except (TrainingError, CheckpointError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C outside the loop (which turns it into a checkpoint and a clean stop)
        print("interrupted while starting or finishing, outside the training loop: this interruption saved nothing; "
              "resume with --train.resume=auto", file=sys.stderr)
        return 128 + signal.SIGINT
    if summary["stopped_by"]:  # the checkpoint and the resume command were printed; tell shell scripts it is unfinished
        return 128 + signal.Signals[summary["stopped_by"]].value
    print(f"done: step {summary['step']}, run folder {summary['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
