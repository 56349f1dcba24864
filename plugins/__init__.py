"""membench's built-in plugins. Each module is an ordinary plugin, shaped exactly like a
third-party one: it implements hooks from membench.hookspecs and imports torch lazily."""
