"""``python -m ops_pipeline.cli``: the same as the ``ops-pipeline`` command."""

from ops_pipeline.cli import main

main()
