"""Integrations with other evaluation tools (optional extras).

:mod:`audit.integrations.inspect_task` runs the held-out set as an Inspect AI task; it needs
``pip install 'specdrift[inspect]'``.
"""
