"""Bundled colour themes (<name>.json) and stylesheets (*.tcss); installed as the package tui.themes."""
