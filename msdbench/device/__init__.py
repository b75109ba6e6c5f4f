"""The microcontroller tier (paper figs 7 and 10): the device backend.

board/      the board's program, MicroPython (runs on CPython too): Thrift binary codec, link
            framing, the services, groups, the on-board client; concatenated by bundle.py
idlgen.py   the IDL (msdbench/idl/*.thrift) as MicroPython source the board's codec reads
firmware.py MicroPython's qemu and unix ports built from source, cached by its hash
boards.py   emulated (qemu-system-arm), serial (a real board) and unix (a stand-in) boards
relay.py    the link process: paces bytes at the radio's rate, injects damaged frames in tests
hostlink.py the host's end of the link (pyserial) and thriftpy2 clients over it
backend.py  manifest -> board up, plan sent, driver run (on the board or the host), teardown
image.py    `msdbench image device`: the firmware and the stamp the cells depend on
"""
