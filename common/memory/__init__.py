"""Memory planning: the peak a training step needs, what the machine has, and a refusal that
says what to change, all before a run charges any privacy."""
