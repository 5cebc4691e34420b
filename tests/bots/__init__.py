"""Tests of the bots: pure deciders on hand-built views, and their actions through the program."""
