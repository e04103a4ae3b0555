from georelay_tools.cli import main

main(prog_name="python -m georelay_tools")
