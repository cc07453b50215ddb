"""The ``ledgerlink`` command line: one module per command group, built into one parser by agent.cli.main."""
