"""Everything Qt: the main window, tool tabs, history panel and widgets."""
