"""The visual Turing test: readers tell real from synthetic cases of a release, blinded.

``vtt create`` draws a balanced, blinded study folder; ``vtt serve`` is the reading web app;
``vtt score`` computes the readers' statistics from the stored answers and the answer key.
"""
