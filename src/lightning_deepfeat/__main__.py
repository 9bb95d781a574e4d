"""``python -m lightning_deepfeat`` runs the ``deepfeat`` command line."""

from lightning_deepfeat.cli.main import run

if __name__ == "__main__":
    run()
