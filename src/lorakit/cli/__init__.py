"""The `lorakit` command: thin wrappers over the packages."""
