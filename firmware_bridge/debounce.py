"""Contact debouncing and status-LED blink patterns, shared by the firmware and the GPIO bridge.

Runs under CPython and MicroPython (same subset rules as wire.py). Time is passed in as
milliseconds from a monotonic counter, so the logic is testable without hardware.
"""

try:
    from firmware_bridge import wire
except ImportError:  # on the controller board the modules sit flat on the filesystem
    import wire

PRESS = 1
RELEASE = -1

LED_PATTERNS_MS = wire.CONSTANTS["led_patterns_ms"]
PATTERN_NAMES = {number: name for name, number in wire.STATUS_PATTERNS.items()}


class Debouncer:
    """Reports a contact change only after the raw level has been steady for settle_ms.

    update() returns PRESS (+1) on a debounced press, RELEASE (-1) on a debounced release,
    0 otherwise. Bounces shorter than settle_ms never produce an edge.
    """

    def __init__(self, settle_ms=None, pressed=False):
        self.settle_ms = wire.TIMING_MS["debounce"] if settle_ms is None else settle_ms
        self.pressed = pressed
        self._candidate = pressed
        self._since_ms = 0

    def update(self, raw_pressed, now_ms):
        raw_pressed = bool(raw_pressed)
        if raw_pressed != self._candidate:
            self._candidate = raw_pressed
            self._since_ms = now_ms
            return 0
        if self._candidate != self.pressed and now_ms - self._since_ms >= self.settle_ms:
            self.pressed = self._candidate
            return PRESS if self.pressed else RELEASE
        return 0


def pattern_level(pattern, now_ms):
    """Whether the status LED is lit at now_ms for a status pattern (number or name)."""
    name = PATTERN_NAMES.get(pattern, pattern)
    steps = LED_PATTERNS_MS.get(name, LED_PATTERNS_MS["off"])
    period = 0
    for step in steps:
        period += step
    if period <= 0:
        return False
    phase = now_ms % period
    lit = True
    for step in steps:
        if phase < step:
            return lit
        phase -= step
        lit = not lit
    return lit
