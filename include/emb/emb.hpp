// emb/emb.hpp — everything emb offers, in one include.
#pragma once

#include "index_span.hpp"
#include "options.hpp"
#include "sparse_grad.hpp"
#include "embedding.hpp"
#include "embedding_bag.hpp"
#include "quantized.hpp"
#include "optim.hpp"
#include "linear.hpp"
#include "one_hot.hpp"
#include "similarity.hpp"
#include "vocabulary.hpp"
#include "io/file_error.hpp"
#include "io/npy.hpp"
#include "io/word2vec.hpp"
#include "io/glove.hpp"
#include "io/packed.hpp"
