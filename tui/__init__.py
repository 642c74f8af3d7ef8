"""rwkv-tui's terminal front end: the Textual app and the command line, both thin clients of ``engine``."""
