"""The ``deepfeat`` command line.

* :class:`DeepFeatCLI`: the LightningCLI behind ``deepfeat fit|validate|test|predict``
  (subclass it in your own project to add arguments);
* :func:`main`: run ``deepfeat`` from Python, ``main(["fit", "--config", "digits"])``;
* :func:`run`: the console script, with short error messages.
"""

from lightning_deepfeat.cli.core import DeepFeatArgumentParser, DeepFeatCLI, link_data_to_model
from lightning_deepfeat.cli.main import SUBCOMMANDS, main, run

__all__ = ["SUBCOMMANDS", "DeepFeatArgumentParser", "DeepFeatCLI", "link_data_to_model", "main", "run"]
