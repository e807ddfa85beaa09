"""Search algorithms: each is a generator per problem that yields batched requests to the scheduler."""
