"""Stops one process of ours on the remote, through a pidfd.

tensorboard-remote feeds this file to the remote's python3 (``python3 -
PID START UID BOOT GRACE``) from the stop script (remote.py); it never
imports tensorboard_remote. Once the pidfd is open it names this exact
process, so re-checking its identity (start time, field 22 of
/proc/PID/stat; uid; boot id) and then signalling through it leaves no
window for the pid to be reused. SIGTERM, then SIGKILL after GRACE seconds.

Exit status: 0 stopped, 2 not ours or gone (never signalled), 3 no pidfd
support here, 4 would not die.
"""
import os, select, signal, sys
pid, start, uid, boot, grace = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
if not hasattr(os, "pidfd_open"):
    sys.exit(3)
try:
    fd = os.pidfd_open(pid)
except OSError as error:
    sys.exit(2 if error.errno == 3 else 3)
def ours():
    try:
        with open("/proc/%d/stat" % pid) as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        with open("/proc/sys/kernel/random/boot_id") as handle:
            same_boot = handle.read().strip() == boot
        return same_boot and fields[0] not in ("Z", "X") and fields[19] == start and str(os.stat("/proc/%d" % pid).st_uid) == uid
    except OSError:
        return False
if not ours():
    sys.exit(2)
def ended(seconds):
    # A pidfd turns readable when its process exits (a zombie has exited).
    return bool(select.select([fd], [], [], seconds)[0])
signal.pidfd_send_signal(fd, signal.SIGTERM)
if ended(grace):
    sys.exit(0)
signal.pidfd_send_signal(fd, signal.SIGKILL)
sys.exit(0 if ended(grace) else 4)
