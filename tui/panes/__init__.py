"""Panes: the Chat, Music and State areas of the app, one module each."""
