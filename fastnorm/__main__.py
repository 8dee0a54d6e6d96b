"`python -m fastnorm ...` runs the `fastnorm` command"
from .cli import main

main()
