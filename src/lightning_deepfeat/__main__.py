"""``python -m lightning_deepfeat`` runs the ``deepfeat`` command line."""

from lightning_deepfeat.cli import run

if __name__ == "__main__":
    run()
