"""The `vm` host kind (deployments 3 and 4): a QEMU guest msdbench builds and boots.

  image.py     the guest image, built offline (debootstrap + Debian's kernel + wheels), cached by hash
  guest-init   the guest's start-up (on the project disk)
  agent.py     what runs in the guest: starts domains for the host, readdresses a restored guest
  relay.py     the host's end: runs a command in the guest like `ssh host cmd` would
  net.py       tap + bridge per guest, a /30 from 10.214.0.0/16, the state `msdbench clean` reads
  guest.py     one QEMU guest: boot or restore, console, teardown
  snapshot.py  a booted guest saved once, restored per cell
  accel.py     KVM if a guest really boots under it, else TCG (probed, cached)
  host.py      the host kind itself (msdbench/hosts registry)
  stamp.py     `msdbench image vm`: the build_image rule's output
  clean.py     what a SIGKILLed harness left
"""
