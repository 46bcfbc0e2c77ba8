"""python -m agentgw"""

from agentgw.cli import main

main()
