"""Checks that mmcv's compiled ops load against the installed torch.

Prints one line and exits 1 when they do not; run by ``make setup``.
"""
import sys


def main() -> int:
    import torch
    try:
        import mmcv
        import mmcv._ext  # noqa: F401
    except ImportError as err:
        print(f'error: mmcv\'s compiled ops do not load under torch '
              f'{torch.__version__} ({str(err).splitlines()[0][:160]}). '
              'An mmcv wheel built against another torch was installed '
              "(pip's wheel cache does not key builds by torch). Recover: "
              'pip uninstall -y mmcv && MMCV_WITH_OPS=1 pip install '
              '--no-cache-dir --no-build-isolation mmcv==2.1.0 (or: make '
              'clean-venv setup).', file=sys.stderr)
        return 1
    print(f'mmcv {mmcv.__version__} with compiled ops, torch '
          f'{torch.__version__}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
