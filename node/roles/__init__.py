"""Node roles as synchronous state machines: fed messages and the time, they return effects.

Nothing here does I/O (a test enforces it): the runtime performs the effects, in order, and
the simulator schedules them on virtual time. Both drive these same classes.
"""
