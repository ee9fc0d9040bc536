"""Knowledge graphs: building, storage, personalized PageRank, graph retrieval."""
