"""dev/checks.py: the pass/fail counting that every dev/test_*.py shares.

    from checks import Checks
    suite = Checks("test_study")        # quiet=True: print failures only
    suite.check(x == 3, "x is 3 (%d)" % x)  # prints "ok   WHAT" or "FAIL WHAT"; returns the condition
    suite.skip("part B (torch not importable)")
    suite.finish()                      # prints each "skipped: REASON" and
                                        # "test_study: N passed, N failed[, N skipped]", exits 1 on a failure

tests/run_all.sh reads the last "N passed, N failed" line, every line starting with FAIL, and every
"skipped: REASON" line (a skip fails under CI=true unless tests/skip_allowlist.txt allows it)."""
import sys


class Checks:
    def __init__(self, name, quiet=False):
        self.name, self.quiet = name, quiet
        self.passed = self.failed = 0
        self.skipped = []

    def check(self, cond, what):
        if cond:
            self.passed += 1
            if not self.quiet:
                print("ok   " + what)
        else:
            self.failed += 1
            print("FAIL " + what)
        return bool(cond)

    def skip(self, reason):
        self.skipped.append(reason)

    def summary(self):
        return "%d passed, %d failed%s" % (self.passed, self.failed,
                                           ", %d skipped" % len(self.skipped) if self.skipped else "")

    def finish(self):
        for reason in self.skipped:
            print("skipped: " + reason)
        print("%s: %s" % (self.name, self.summary()))
        sys.exit(1 if self.failed else 0)
