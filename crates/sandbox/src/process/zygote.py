# The template ("zygote") of a Python function: started by the hub in the function's own
# jail, it imports the Lambda runtime client and the libraries the handler's module
# imports, then forks a new environment each time the hub asks for one.
#
# Protocol, on a SOCK_SEQPACKET socket at descriptor 0 (one message per packet):
#   template -> hub   b"ready <pid>"          imported; waiting for fork requests
#   hub -> template   JSON {"env": {...}, "clear": bool} with three descriptors:
#                     the environment's stdout, its stderr, and a "go" pipe
#   template -> hub   b"forked <pid>"         the child exists, waiting for go
#   template -> hub   b"exit <pid> <status>"  a child ended (status as Rust prints it)
#   template -> hub   b"failed <reason>"      the fork request could not be served
# The child waits until the hub writes a byte to the go pipe (after it moved the child into
# its environment's control group), then becomes an ordinary awslambdaric process with the
# environment's variables, standard streams and argv, exactly as a spawned one would be.
#
# The handler's module itself is not imported here: its module-level code (clients built
# with the environment's credentials and endpoint, for one) runs in each environment, as it
# does on Lambda. Its top-level imports of other packages are imported here, which is where
# the time goes.

import ast
import json
import os
import signal
import socket
import sys

HANDLER = sys.argv[1]
sys.path[0] = os.getcwd()
CTL = socket.socket(fileno=0)
os.set_inheritable(0, False)


def send(text):
    try:
        CTL.send(text.encode())
    except OSError:
        os._exit(0)


def status_of(raw):
    if os.WIFSIGNALED(raw):
        return "signal: %d" % os.WTERMSIG(raw)
    return "exit status: %d" % os.waitstatus_to_exitcode(raw)


def reap(_signum, _frame):
    while True:
        try:
            pid, raw = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        send("exit %d %s" % (pid, status_of(raw)))


def imports_of(module):
    """Top-level absolute imports of the handler's module, read without running it."""
    base = module.replace(".", os.sep)
    for candidate in (base + ".py", os.path.join(base, "__init__.py")):
        try:
            with open(candidate, "rb") as f:
                tree = ast.parse(f.read(), candidate)
            break
        except (OSError, SyntaxError, ValueError):
            continue
    else:
        return []
    names = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    own = module.split(".")[0]
    return [n for n in names if n.split(".")[0] != own]


def is_own_file(name):
    """A single-file module of the function's own (in its workdir): user code, left to the
    environment like the handler's module."""
    top = name.split(".")[0]
    return os.path.isfile(top + ".py")


def preload():
    # All of the runtime client but its C part, which fixes the Runtime API's address (from
    # AWS_LAMBDA_RUNTIME_API) when it loads: each fork loads it with its own.
    sys.modules["runtime_client"] = None
    try:
        import awslambdaric.__main__  # noqa: F401
    finally:
        del sys.modules["runtime_client"]

    for name in imports_of(HANDLER.rsplit(".", 1)[0]):
        if is_own_file(name):
            continue
        try:
            __import__(name)
        except BaseException:  # a library that cannot load here loads (or fails) later
            pass


def load_runtime_client():
    from awslambdaric import lambda_runtime_client as lrc

    try:
        import runtime_client

        runtime_client.initialize_client(lrc._user_agent())
        if not hasattr(lrc, "runtime_client"):
            raise AttributeError("runtime_client")
        lrc.runtime_client = runtime_client
    except (ImportError, AttributeError):
        # Another layout of awslambdaric: import all of it again, here.
        for name in [m for m in sys.modules if m == "awslambdaric" or m.startswith("awslambdaric.")]:
            del sys.modules[name]


def child(request, out, err, go):
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    CTL.close()
    os.setsid()
    if os.read(go, 1) != b"g":
        os._exit(70)
    os.close(go)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    for fd in (null, out, err):
        if fd > 2:
            os.close(fd)
    if request.get("clear", True):
        os.environ.clear()
    os.environ.update(request["env"])
    load_runtime_client()
    import awslambdaric.__main__ as ric

    sys.argv = [ric.__file__, HANDLER]
    ric.main(sys.argv)


def serve():
    signal.signal(signal.SIGCHLD, reap)
    send("ready %d" % os.getpid())
    fd_space = socket.CMSG_SPACE(3 * 4)
    while True:
        msg, ancdata, _flags, _addr = CTL.recvmsg(1 << 20, fd_space)
        if not msg:
            os._exit(0)
        fds = []
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(data) - len(data) % 4
                fds.extend(int.from_bytes(data[i : i + 4], sys.byteorder) for i in range(0, usable, 4))
        try:
            request = json.loads(msg)
            if len(fds) != 3 or not isinstance(request.get("env"), dict):
                raise ValueError("a fork request carries an env and three descriptors")
        except ValueError as e:
            for fd in fds:
                os.close(fd)
            send("failed %s" % e)
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                child(request, *fds)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except BaseException:
                        pass
                os._exit(code)
        for fd in fds:
            os.close(fd)
        send("forked %d" % pid)


preload()
serve()
