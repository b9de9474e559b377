"""Plausible wrong answers, one module per chapter: ``chNN_topic.py`` → ``WRONG_ANSWERS``."""
