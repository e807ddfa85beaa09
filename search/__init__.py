"""Search trees, search algorithms, and the scheduler that batches many searches into few model calls."""

from search.tree import Node, Tree, read_trees, write_trees

__all__ = ["Node", "Tree", "read_trees", "write_trees"]
