"""Knowledge bases, question sets and the synthetic novel-facts generator."""
