import sys
from pathlib import Path

# reference implementations shared by this package's tests
sys.path.insert(0, str(Path(__file__).parent))
