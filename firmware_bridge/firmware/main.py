"""smearscope controller firmware for a Raspberry Pi Pico (RP2040) running MicroPython.

Copy this file together with ../wire.py, ../debounce.py, ../controller.py and
../protocol_constants.json to the board (see README.md). The protocol logic lives in
controller.py, which the host's simulator and tests run too; this file only wires it to the
hardware: the USB serial link (or a UART), the CAPTURE button, the status LED, the
illumination LED (PWM) and the watchdog.
"""

import os
import sys
import time

import machine
import micropython

from controller import Controller
import wire

# ---- wiring (change to match the board) ----
LINK = "usb"  # "usb": the Pico's USB serial port; "uart": UART0 on GP0 (TX) / GP1 (RX)
BUTTON_PIN = 15  # to ground; internal pull-up
STATUS_LED_PIN = "LED"  # the on-board LED
ILLUMINATION_PIN = 16  # PWM to the LED driver's dim input
WATCHDOG_MS = 2000


class UsbLink:
    """The USB CDC serial port (MicroPython's stdin/stdout) in raw binary mode."""

    def __init__(self):
        import select

        micropython.kbd_intr(-1)  # 0x03 in a frame must not raise KeyboardInterrupt
        self._poll = select.poll()
        self._poll.register(sys.stdin, select.POLLIN)
        self._in = sys.stdin.buffer
        self._out = sys.stdout.buffer

    def read(self):
        data = bytearray()
        while len(data) < 64 and self._poll.poll(0):
            data.extend(self._in.read(1))
        return bytes(data)

    def write(self, data):
        self._out.write(data)


class UartLink:
    """UART0 for boards wired to a USB-serial adapter instead of using their own USB port."""

    def __init__(self):
        self._uart = machine.UART(0, baudrate=wire.CONSTANTS["baudrate"], tx=machine.Pin(0), rx=machine.Pin(1))

    def read(self):
        return self._uart.read() if self._uart.any() else b""

    def write(self, data):
        self._uart.write(data)


class Board:
    """The pins the controller drives."""

    def __init__(self, link):
        self.link = link
        self.button = machine.Pin(BUTTON_PIN, machine.Pin.IN, machine.Pin.PULL_UP)
        self.status_led = machine.Pin(STATUS_LED_PIN, machine.Pin.OUT)
        self.illumination = machine.PWM(machine.Pin(ILLUMINATION_PIN))
        self.illumination.freq(20000)
        self.illumination.duty_u16(0)
        self._level = 0

    def button_pressed(self):
        return self.button.value() == 0

    def show(self, led_on, illumination):
        self.status_led.value(1 if led_on else 0)
        if illumination != self._level:
            self._level = illumination
            self.illumination.duty_u16(illumination * 257)


class MonotonicMs:
    """A millisecond counter that does not wrap (time.ticks_ms wraps after about 12 days)."""

    def __init__(self):
        self._last = time.ticks_ms()
        self.now = 0

    def tick(self):
        current = time.ticks_ms()
        self.now += time.ticks_diff(current, self._last)
        self._last = current
        return self.now


def run(board, controller, clock, watchdog=None, iterations=None):
    """The main loop: sample the button, exchange bytes, refresh the LEDs, about every ms."""
    from debounce import pattern_level

    count = 0
    while iterations is None or count < iterations:
        count += 1
        now = clock.tick()
        try:
            controller.sample_button(board.button_pressed(), now)
            data = board.link.read()
            if data:
                controller.feed(data, now)
            out = controller.poll(now)
            if out:
                board.link.write(out)
            board.show(pattern_level(controller.effective_pattern(), now), controller.illumination)
        except Exception:  # report and carry on (printing would corrupt the USB link)
            controller.report_error(wire.ERROR_CODES["INTERNAL"], 0)
        if watchdog is not None:
            watchdog.feed()
        time.sleep_ms(1)


def main():
    if machine.Pin(BUTTON_PIN, machine.Pin.IN, machine.Pin.PULL_UP).value() == 0:
        print("CAPTURE held at boot: firmware not started, REPL left free")
        return
    boot_id = int.from_bytes(os.urandom(4), "big")
    controller = Controller(boot_id)
    if machine.reset_cause() == machine.WDT_RESET:
        controller.report_error(wire.ERROR_CODES["WATCHDOG_RESET"], 0)
    link = UsbLink() if LINK == "usb" else UartLink()
    run(Board(link), controller, MonotonicMs(), machine.WDT(timeout=WATCHDOG_MS))


if __name__ == "__main__":
    main()
