# The Python side of an execution (sandbox-agent runs it with python3 -u -c).
# fd 4 first gets "r": the interpreter is up; the agent starts the code's
# clock then. fd 3 then gives one byte: "g" (or "e": set the variables in
# /run/sandbox/env first; a cell's line is "env" then) runs /run/sandbox/main.py once,
# as a script would run (its own __main__, its own argv), and reports its
# exit status as "x N" on fd 4 once everything an exit does is done (other
# threads joined, atexit handlers run, output flushed): the agent answers
# then, and the interpreter's teardown is nobody's wait. "w" (before any
# of those, any number of times) runs main.py the same way in a child whose
# output nobody reads, and says "w N" once the child is gone (N its exit
# status, 255 if the code did not run to its end): under TCG a restored VM
# translates the run's path there, before a caller waits, while this
# interpreter and everything it holds stay as they were. "s"
# starts a session: "s" on fd 4 once its loop is set up, then each line read from
# fd 3 runs /run/sandbox/cell.py in one namespace, and its status goes back
# as a line on fd 4. An exception, SystemExit or KeyboardInterrupt (the
# agent's timeout) ends the cell, not the interpreter.
import os, sys, types
def _sandbox_session():
    import linecache, _signal
    # The agent's interrupt (a cell's timeout) is a KeyboardInterrupt only
    # inside a cell: one that lands between cells must not end the session.
    in_cell = [False]
    def on_interrupt(signum, frame):
        if in_cell[0]:
            raise KeyboardInterrupt
    _signal.signal(_signal.SIGINT, on_interrupt)
    module = types.ModuleType('__main__')
    module.__builtins__ = __builtins__
    sys.modules['__main__'] = module
    sys.argv = ['']
    sys.path[0] = ''
    pending = b''
    n = 0
    os.write(4, b's\n')
    while True:
        while b'\n' not in pending:
            chunk = os.read(3, 64)
            if not chunk:
                os._exit(0)
            pending += chunk
        line, pending = pending.split(b'\n', 1)
        n += 1
        status = 0
        try:
            try:
                if line == b'env':
                    _sandbox_env()
                source = _sandbox_read('/run/sandbox/cell.py')
                name = '<exec %d>' % n
                linecache.cache[name] = (len(source), None, source.decode('utf-8', 'replace').splitlines(True), name)
                in_cell[0] = True
                try:
                    exec(compile(source, name, 'exec', dont_inherit=True), module.__dict__)
                finally:
                    in_cell[0] = False
            except SystemExit as e:
                status = _sandbox_exit_status(e)
            except BaseException as e:
                tb = e.__traceback__.tb_next if e.__traceback__ else None
                sys.excepthook(type(e), e.with_traceback(tb), tb)
                status = 130 if isinstance(e, KeyboardInterrupt) else 1
        except KeyboardInterrupt:
            status = 130
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
        os.write(4, b'%d\n' % status)
def _sandbox_read(path):
    # Plain system calls: open() takes twice as many (fstat, isatty, lseek),
    # each a fraction of a millisecond under TCG on a run's critical path.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b''.join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)
def _sandbox_env():
    # Variables the agent hands over with the code (proxy settings): set
    # here, so the interpreter that waited for the code serves it; an empty
    # value unsets one.
    for entry in _sandbox_read('/run/sandbox/env').split(b'\0'):
        key, eq, value = entry.partition(b'=')
        if key and eq and value:
            os.environb[key] = value
        elif key and eq:
            os.environb.pop(key, None)
def _sandbox_exit_status(e):
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code & 0xff
    print(e.code, file=sys.stderr)
    return 1
def _sandbox_finish(status):
    # What an exit does, in CPython's order; then the status, then a quick
    # exit (the agent kills what is left anyway). Only modules the code
    # imported have anything to do: importing them here would cost more
    # than the teardown this saves.
    threading = sys.modules.get('threading')
    if threading is not None:
        try:
            threading._shutdown()
        except BaseException:
            pass
    atexit = sys.modules.get('atexit')
    if atexit is not None:
        try:
            atexit._run_exitfuncs()
        except BaseException:
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    try:
        os.write(4, b'x %d\n' % status)
    except OSError:
        pass
    os._exit(status)
# In a snapshot template, the modules agent code imports most are loaded
# before "ready", so every clone has them: under TCG a clone's first import
# of json alone costs seconds. None of them takes random state at import
# (random, tempfile, ssl, hashlib stay out): clones share what is loaded.
_SANDBOX_PRELOAD = ('json', 're', 'collections', 'datetime', 'math', 'pathlib', 'typing', 'dataclasses',
                    'subprocess', 'csv', 'decimal', 'fractions', 'textwrap', 'string', 'base64',
                    'urllib.parse', 'shutil', 'glob', 'struct', 'copy', 'enum', 'heapq', 'bisect', 'array')
def _sandbox_preload():
    if os.environ.pop('SANDBOX_PRELOAD', None) is None:
        return
    import importlib
    for name in _SANDBOX_PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:
            pass
def _sandbox_warm():
    pid = os.fork()
    if pid == 0:
        try:
            # Its output and its "x N" go to a pipe, as a run's do, that
            # nobody reads: the warm-up code prints a few bytes.
            out = os.pipe()[1]
            for fd in (1, 2, 4):
                os.dup2(out, fd)
            _sandbox_script(b'g')
        finally:
            os._exit(255)  # reached only if the code did not run to its end
    # Said once the child is gone: its exit (tearing down its copy of this
    # process, tens of milliseconds under TCG) would otherwise hold up a
    # run handed over right after the hello, as this waits for it.
    _, status = os.waitpid(pid, 0)
    os.write(4, b'w %d\n' % (os.WEXITSTATUS(status) if os.WIFEXITED(status) else 255))
def _sandbox_main():
    _sandbox_preload()
    os.write(4, b'r\n')
    mode = os.read(3, 1)
    while mode == b'w':
        _sandbox_warm()
        mode = os.read(3, 1)
    if mode == b's':
        return _sandbox_session()
    _sandbox_script(mode)
def _sandbox_script(mode):
    os.close(3)
    if mode == b'e':
        _sandbox_env()
    os.set_inheritable(4, False)  # the code's own children must not hold it
    path = '/run/sandbox/main.py'
    source = _sandbox_read(path)
    sys.argv = [path]
    sys.path[0] = os.path.dirname(path)
    module = types.ModuleType('__main__')
    module.__file__ = path
    module.__builtins__ = __builtins__
    sys.modules['__main__'] = module
    status = 0
    try:
        code = compile(source, path, 'exec', dont_inherit=True)
        exec(code, module.__dict__)
    except SystemExit as e:
        status = _sandbox_exit_status(e)
    except BaseException as e:
        # Report as an uncaught exception of the script itself.
        tb = e.__traceback__.tb_next if e.__traceback__ else None
        sys.excepthook(type(e), e.with_traceback(tb), tb)
        status = 1
    _sandbox_finish(status)
_sandbox_main()
