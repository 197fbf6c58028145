# The Python side of an execution (sandbox-agent runs it with python3 -u -c).
# fd 4 first gets "r": the interpreter is up; the agent starts the code's
# clock then. fd 3 then gives one byte: "g" runs /run/sandbox/main.py once,
# as a script would run (its own __main__, its own argv); "s" starts a
# session: each line then read from fd 3 runs /run/sandbox/cell.py in one
# namespace, and its status goes back as a line on fd 4. An exception,
# SystemExit or KeyboardInterrupt (the agent's timeout) ends the cell, not
# the interpreter.
import os, sys, types
def _sandbox_session():
    import linecache
    module = types.ModuleType('__main__')
    module.__builtins__ = __builtins__
    sys.modules['__main__'] = module
    sys.argv = ['']
    sys.path[0] = ''
    pending = b''
    n = 0
    while True:
        try:
            while b'\n' not in pending:
                chunk = os.read(3, 64)
                if not chunk:
                    os._exit(0)
                pending += chunk
            pending = pending.split(b'\n', 1)[1]
        except KeyboardInterrupt:
            continue
        n += 1
        status = 0
        try:
            try:
                with open('/run/sandbox/cell.py', 'rb') as f:
                    source = f.read()
                name = '<exec %d>' % n
                linecache.cache[name] = (len(source), None, source.decode('utf-8', 'replace').splitlines(True), name)
                exec(compile(source, name, 'exec', dont_inherit=True), module.__dict__)
            except SystemExit as e:
                if e.code is None:
                    status = 0
                elif isinstance(e.code, int):
                    status = e.code & 0xff
                else:
                    print(e.code, file=sys.stderr)
                    status = 1
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
def _sandbox_main():
    os.write(4, b'r\n')
    if os.read(3, 1) == b's':
        return _sandbox_session()
    os.close(3)
    os.close(4)
    path = '/run/sandbox/main.py'
    with open(path, 'rb') as f:
        source = f.read()
    sys.argv = [path]
    sys.path[0] = os.path.dirname(path)
    module = types.ModuleType('__main__')
    module.__file__ = path
    module.__builtins__ = __builtins__
    sys.modules['__main__'] = module
    try:
        code = compile(source, path, 'exec', dont_inherit=True)
        exec(code, module.__dict__)
    except SystemExit:
        raise
    except BaseException as e:
        # Report as an uncaught exception of the script itself.
        tb = e.__traceback__.tb_next if e.__traceback__ else None
        sys.excepthook(type(e), e.with_traceback(tb), tb)
        sys.exit(1)
_sandbox_main()
