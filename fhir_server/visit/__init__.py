"""The asynchronous visit: its state machine, $submit, the prescribing rules."""
