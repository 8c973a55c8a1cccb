"""Root shim so `python train.py data=healthcare` works from a clone; all logic lives in the package."""

from domaintune.train import main

if __name__ == "__main__":
    main()
