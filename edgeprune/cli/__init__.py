"""The `edgeprune` command line: one module per subcommand (add_parser + run)."""
