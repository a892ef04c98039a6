// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @title Parley adjudicator: one contract, many multi-party state channels.
/// @notice A channel is opened with its participants, BFT threshold, dispute window, tokens and
/// minimum bond. Participants deposit ERC-20 tokens (each deposit gets the next nonce of the
/// channel). To leave, anyone submits a checkpoint certified by at least `threshold` distinct
/// participants (EIP-712 signatures); a strictly newer certified checkpoint may replace it
/// during the dispute window, which then restarts. After the window the settlement is final
/// and the channel is concluded for good: every payout leaf of the final Merkle root can be
/// claimed once, and deposits the final checkpoint did not credit are refunded.
///
/// Invariants (per channel and token):
/// - sum of claims <= checkpoint total <= sum of deposits (checked at propose and at claim), and
///   total + refunds <= deposits (checked at refund): a channel never pays out more than it
///   took in, whatever its quorum signs, so other channels' funds in this contract are safe;
/// - a leaf is paid at most once; state is written before any token leaves (checks, effects,
///   interactions) and every function that moves value is also `nonReentrant`;
/// - signers are counted with a bitmap over the participant index (`|=`), a repeated signer
///   reverts, and ECDSA rejects high-s and malformed signatures;
/// - a signature is bound to this chain and this contract (EIP-712 domain) and to one channel
///   (the channel id is a field of every signed struct).
contract Adjudicator is EIP712, ReentrancyGuard {
    using SafeERC20 for IERC20;

    // ---------------------------------------------------------------- constants and types

    /// @notice The shortest dispute window a channel may choose.
    uint256 public constant MIN_DISPUTE_WINDOW = 1 hours;
    /// @notice The longest dispute window a channel may choose.
    uint256 public constant MAX_DISPUTE_WINDOW = 365 days;
    /// @notice Signers are counted in a uint256 bitmap, one bit per participant.
    uint256 public constant MAX_PARTICIPANTS = 256;
    uint256 public constant MAX_TOKENS = 64;

    bytes32 public constant CHECKPOINT_TYPEHASH = keccak256(
        "Checkpoint(bytes32 channel,uint64 version,bytes32 payoutRoot,bytes32 stateHash,"
        "uint256[] totals,uint64 depositNonce,uint64 time)"
    );
    bytes32 public constant OP_TYPEHASH = keccak256("Op(bytes32 channel,address author,uint64 seq,bytes32 contentHash)");

    enum Status {
        None,
        Open,
        Pending,
        Concluded
    }

    /// @notice A checkpoint as the participants sign it (EIP-712 struct `Checkpoint`).
    struct Checkpoint {
        bytes32 channel;
        uint64 version;
        bytes32 payoutRoot;
        bytes32 stateHash;
        uint256[] totals; // per channel token, in the token's own decimals
        uint64 depositNonce; // the highest deposit nonce the checkpoint credits
        uint64 time; // checkpoint time, ms (advisory on-chain)
    }

    struct Settlement {
        uint64 version;
        uint64 depositNonce;
        uint64 time;
        uint64 finalizesAt;
        bytes32 payoutRoot;
        bytes32 stateHash;
        uint256[] totals;
    }

    struct DepositRecord {
        address account;
        uint64 tokenIndex;
        bool refunded;
        uint256 amount;
    }

    struct Bond {
        uint256 bonded;
        uint256 unbonding;
        uint64 readyAt;
    }

    struct Channel {
        Status status;
        uint64 disputeWindow;
        uint64 depositNonce;
        uint16 threshold;
        uint256 minBond;
        uint256 insurance;
        address[] participants;
        address[] tokens;
        mapping(address => uint256) participantIndex; // 1-based; 0 = not a participant
        mapping(address => uint256) tokenIndex; // 1-based; 0 = not a channel token
        mapping(uint256 => uint256) deposited; // token index -> sum of deposits
        mapping(uint256 => uint256) claimedTotal; // token index -> sum of claims
        mapping(uint256 => uint256) refundedTotal; // token index -> sum of refunds
        mapping(uint64 => DepositRecord) deposits;
        mapping(bytes32 => bool) claimed; // leaf -> paid
        mapping(address => Bond) bonds;
        Settlement settlement;
    }

    mapping(bytes32 => Channel) private _channels;

    // ---------------------------------------------------------------- events

    event ChannelOpened(
        bytes32 indexed channelId,
        address[] participants,
        uint256 threshold,
        uint256 disputeWindow,
        address[] tokens,
        uint256 minBond,
        uint256 nonce
    );
    event Deposited(
        bytes32 indexed channelId, uint64 indexed nonce, address indexed account, address token, uint256 amount
    );
    event Bonded(bytes32 indexed channelId, address indexed participant, uint256 amount, uint256 total);
    event UnbondStarted(bytes32 indexed channelId, address indexed participant, uint256 amount, uint64 readyAt);
    event BondWithdrawn(bytes32 indexed channelId, address indexed participant, uint256 amount);
    event SettlementProposed(
        bytes32 indexed channelId,
        uint64 indexed version,
        bytes32 payoutRoot,
        bytes32 stateHash,
        uint64 depositNonce,
        uint64 finalizesAt,
        address proposer
    );
    event SettlementChallenged(
        bytes32 indexed channelId,
        uint64 indexed version,
        uint64 replacedVersion,
        bytes32 payoutRoot,
        bytes32 stateHash,
        uint64 depositNonce,
        uint64 finalizesAt,
        address challenger
    );
    event SettlementFinalized(bytes32 indexed channelId, uint64 indexed version, bytes32 payoutRoot);
    event Claimed(bytes32 indexed channelId, address indexed account, address indexed token, uint256 amount);
    event DepositRefunded(
        bytes32 indexed channelId, uint64 indexed nonce, address indexed account, address token, uint256 amount
    );
    event Slashed(
        bytes32 indexed channelId,
        address indexed offender,
        address indexed reporter,
        uint8 offence, // 1 = equivocation, 2 = double sign
        uint256 toReporter,
        uint256 toInsurance
    );

    // ---------------------------------------------------------------- errors

    error UnknownChannel(bytes32 channelId);
    error ChannelExists(bytes32 channelId);
    error ChannelConcluded(bytes32 channelId);
    error NotConcluded(bytes32 channelId);
    error NoParticipants();
    error TooManyParticipants(uint256 count, uint256 maximum);
    error NoTokens();
    error TooManyTokens(uint256 count, uint256 maximum);
    error ZeroAddress();
    error DuplicateParticipant(address participant);
    error DuplicateToken(address token);
    error BadThreshold(uint256 threshold, uint256 participants);
    error DisputeWindowOutOfRange(uint256 window, uint256 minimum, uint256 maximum);
    error NotAParticipant(address account);
    error UnknownToken(address token);
    error ZeroAmount();
    error SettlementPending(bytes32 channelId);
    error NoSettlementPending(bytes32 channelId);
    error ZeroVersion();
    error VersionNotNewer(uint64 version, uint64 current);
    error WrongTotalsLength(uint256 length, uint256 tokens);
    error TotalsExceedDeposits(address token, uint256 total, uint256 deposited);
    error DepositNonceTooHigh(uint64 depositNonce, uint64 current);
    error InvalidSignature(uint256 index);
    error DuplicateSigner(address signer);
    error NotEnoughSignatures(uint256 count, uint256 threshold);
    error DisputeWindowOpen(uint64 finalizesAt);
    error DisputeWindowClosed(uint64 finalizesAt);
    error AlreadyClaimed(bytes32 leaf);
    error InvalidProof();
    error ClaimExceedsTotal(address token, uint256 claimed, uint256 total);
    error UnknownDeposit(uint64 nonce);
    error DepositWasCredited(uint64 nonce, uint64 creditedUpTo);
    error AlreadyRefunded(uint64 nonce);
    error RefundExceedsDeposits(address token);
    error BondBelowMinimum(uint256 total, uint256 minBond);
    error InsufficientBond(uint256 requested, uint256 available);
    error NothingToWithdraw();
    error UnbondNotReady(uint64 readyAt);
    error NothingToSlash(address offender);
    error NotEquivocation();
    error NotDoubleSign();
    error CheckpointMismatch();
    error SignerMismatch(address signerA, address signerB);
    error NativeTransferFailed(address to, uint256 amount);

    constructor() EIP712("Parley", "1") {}

    // ---------------------------------------------------------------- channels

    /// @notice Open a channel. Its id is keccak256(abi.encode(chainid, this, participants,
    /// threshold, disputeWindow, tokens, minBond, nonce)), the formula of `crdt/genesis.py`.
    function openChannel(
        address[] calldata participants,
        uint256 threshold,
        uint256 disputeWindow,
        address[] calldata tokens,
        uint256 minBond,
        uint256 nonce
    ) external returns (bytes32 channelId) {
        uint256 n = participants.length;
        if (n == 0) revert NoParticipants();
        if (n > MAX_PARTICIPANTS) revert TooManyParticipants(n, MAX_PARTICIPANTS);
        if (threshold > n || 3 * threshold <= 2 * n) revert BadThreshold(threshold, n);
        if (disputeWindow < MIN_DISPUTE_WINDOW || disputeWindow > MAX_DISPUTE_WINDOW) {
            revert DisputeWindowOutOfRange(disputeWindow, MIN_DISPUTE_WINDOW, MAX_DISPUTE_WINDOW);
        }
        if (tokens.length == 0) revert NoTokens();
        if (tokens.length > MAX_TOKENS) revert TooManyTokens(tokens.length, MAX_TOKENS);
        channelId = keccak256(
            abi.encode(block.chainid, address(this), participants, threshold, disputeWindow, tokens, minBond, nonce)
        );
        Channel storage ch = _channels[channelId];
        if (ch.status != Status.None) revert ChannelExists(channelId);
        ch.status = Status.Open;
        ch.disputeWindow = uint64(disputeWindow);
        ch.threshold = uint16(threshold);
        ch.minBond = minBond;
        for (uint256 i = 0; i < n; ++i) {
            address p = participants[i];
            if (p == address(0)) revert ZeroAddress();
            if (ch.participantIndex[p] != 0) revert DuplicateParticipant(p);
            ch.participantIndex[p] = i + 1;
        }
        ch.participants = participants;
        for (uint256 i = 0; i < tokens.length; ++i) {
            address t = tokens[i];
            if (t == address(0)) revert ZeroAddress();
            if (ch.tokenIndex[t] != 0) revert DuplicateToken(t);
            ch.tokenIndex[t] = i + 1;
        }
        ch.tokens = tokens;
        emit ChannelOpened(channelId, participants, threshold, disputeWindow, tokens, minBond, nonce);
    }

    /// @notice Deposit `amount` of `token` (token decimals) for participant `account`. The amount
    /// credited is what the contract actually received. Reverts once a settlement is pending.
    function deposit(bytes32 channelId, address token, uint256 amount, address account)
        external
        nonReentrant
        returns (uint64 nonce)
    {
        Channel storage ch = _channels[channelId];
        _requireOpen(ch, channelId);
        uint256 ti = ch.tokenIndex[token];
        if (ti == 0) revert UnknownToken(token);
        if (ch.participantIndex[account] == 0) revert NotAParticipant(account);
        if (amount == 0) revert ZeroAmount();
        IERC20 erc20 = IERC20(token);
        uint256 before = erc20.balanceOf(address(this));
        erc20.safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = erc20.balanceOf(address(this)) - before;
        if (received == 0) revert ZeroAmount();
        nonce = ch.depositNonce + 1;
        ch.depositNonce = nonce;
        ch.deposited[ti - 1] += received;
        ch.deposits[nonce] = DepositRecord(account, uint64(ti - 1), false, received);
        emit Deposited(channelId, nonce, account, token, received);
    }

    // ---------------------------------------------------------------- bonds

    /// @notice Add the attached native currency to the caller's bond in this channel.
    function bond(bytes32 channelId) external payable {
        Channel storage ch = _channels[channelId];
        if (ch.status == Status.None) revert UnknownChannel(channelId);
        if (ch.status == Status.Concluded) revert ChannelConcluded(channelId);
        if (ch.participantIndex[msg.sender] == 0) revert NotAParticipant(msg.sender);
        if (msg.value == 0) revert ZeroAmount();
        Bond storage b = ch.bonds[msg.sender];
        uint256 total = b.bonded + msg.value;
        if (total < ch.minBond) revert BondBelowMinimum(total, ch.minBond);
        b.bonded = total;
        emit Bonded(channelId, msg.sender, msg.value, total);
    }

    /// @notice Start unbonding `amount`. It stays slashable for one dispute window and can be
    /// withdrawn after that, when no settlement is pending. Not allowed while one is pending.
    function unbond(bytes32 channelId, uint256 amount) external {
        Channel storage ch = _channels[channelId];
        if (ch.status == Status.None) revert UnknownChannel(channelId);
        if (ch.status == Status.Pending) revert SettlementPending(channelId);
        Bond storage b = ch.bonds[msg.sender];
        if (amount == 0) revert ZeroAmount();
        if (amount > b.bonded) revert InsufficientBond(amount, b.bonded);
        uint256 rest = b.bonded - amount;
        if (rest != 0 && rest < ch.minBond && ch.status == Status.Open) revert BondBelowMinimum(rest, ch.minBond);
        b.bonded = rest;
        b.unbonding += amount;
        b.readyAt = uint64(block.timestamp) + ch.disputeWindow;
        emit UnbondStarted(channelId, msg.sender, amount, b.readyAt);
    }

    /// @notice Withdraw what finished unbonding.
    function withdrawBond(bytes32 channelId) external nonReentrant {
        Channel storage ch = _channels[channelId];
        if (ch.status == Status.None) revert UnknownChannel(channelId);
        if (ch.status == Status.Pending) revert SettlementPending(channelId);
        Bond storage b = ch.bonds[msg.sender];
        uint256 amount = b.unbonding;
        if (amount == 0) revert NothingToWithdraw();
        if (block.timestamp < b.readyAt) revert UnbondNotReady(b.readyAt);
        b.unbonding = 0;
        emit BondWithdrawn(channelId, msg.sender, amount);
        _sendNative(msg.sender, amount);
    }

    // ---------------------------------------------------------------- settlement

    /// @notice Register a certified checkpoint and start the dispute window.
    function proposeSettlement(Checkpoint calldata checkpoint, bytes[] calldata signatures) external {
        bytes32 channelId = checkpoint.channel;
        Channel storage ch = _channels[channelId];
        _requireOpen(ch, channelId);
        if (checkpoint.version == 0) revert ZeroVersion();
        _checkCheckpoint(ch, checkpoint, signatures);
        uint64 finalizesAt = _store(ch, checkpoint);
        ch.status = Status.Pending;
        emit SettlementProposed(
            channelId,
            checkpoint.version,
            checkpoint.payoutRoot,
            checkpoint.stateHash,
            checkpoint.depositNonce,
            finalizesAt,
            msg.sender
        );
    }

    /// @notice Replace the pending settlement with a certified checkpoint of a strictly higher
    /// version, within the dispute window; the window restarts.
    function challengeSettlement(Checkpoint calldata checkpoint, bytes[] calldata signatures) external {
        bytes32 channelId = checkpoint.channel;
        Channel storage ch = _channels[channelId];
        if (ch.status == Status.None) revert UnknownChannel(channelId);
        if (ch.status == Status.Concluded) revert ChannelConcluded(channelId);
        if (ch.status != Status.Pending) revert NoSettlementPending(channelId);
        Settlement storage s = ch.settlement;
        if (block.timestamp >= s.finalizesAt) revert DisputeWindowClosed(s.finalizesAt);
        uint64 replaced = s.version;
        if (checkpoint.version <= replaced) revert VersionNotNewer(checkpoint.version, replaced);
        _checkCheckpoint(ch, checkpoint, signatures);
        uint64 finalizesAt = _store(ch, checkpoint);
        emit SettlementChallenged(
            channelId,
            checkpoint.version,
            replaced,
            checkpoint.payoutRoot,
            checkpoint.stateHash,
            checkpoint.depositNonce,
            finalizesAt,
            msg.sender
        );
    }

    /// @notice Conclude the channel at the pending checkpoint once its window has passed.
    function finalizeSettlement(bytes32 channelId) external {
        Channel storage ch = _channels[channelId];
        if (ch.status == Status.None) revert UnknownChannel(channelId);
        if (ch.status == Status.Concluded) revert ChannelConcluded(channelId);
        if (ch.status != Status.Pending) revert NoSettlementPending(channelId);
        Settlement storage s = ch.settlement;
        if (block.timestamp < s.finalizesAt) revert DisputeWindowOpen(s.finalizesAt);
        ch.status = Status.Concluded;
        emit SettlementFinalized(channelId, s.version, s.payoutRoot);
    }

    /// @notice Pay one leaf (account, token, amount) of the final payout root, once. Anyone may
    /// call it; the tokens always go to `account`.
    function claim(bytes32 channelId, address account, address token, uint256 amount, bytes32[] calldata proof)
        external
        nonReentrant
    {
        Channel storage ch = _channels[channelId];
        if (ch.status == Status.None) revert UnknownChannel(channelId);
        if (ch.status != Status.Concluded) revert NotConcluded(channelId);
        uint256 ti = ch.tokenIndex[token];
        if (ti == 0) revert UnknownToken(token);
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(account, token, amount))));
        if (ch.claimed[leaf]) revert AlreadyClaimed(leaf);
        if (!MerkleProof.verifyCalldata(proof, ch.settlement.payoutRoot, leaf)) revert InvalidProof();
        uint256 claimedSoFar = ch.claimedTotal[ti - 1] + amount;
        uint256 total = ch.settlement.totals[ti - 1];
        if (claimedSoFar > total) revert ClaimExceedsTotal(token, claimedSoFar, total);
        // effects
        ch.claimed[leaf] = true;
        ch.claimedTotal[ti - 1] = claimedSoFar;
        emit Claimed(channelId, account, token, amount);
        // interaction
        if (amount != 0) IERC20(token).safeTransfer(account, amount);
    }

    /// @notice Return a deposit that the final checkpoint did not credit (its nonce is above the
    /// checkpoint's deposit nonce) to the account it was made for.
    function refundDeposit(bytes32 channelId, uint64 nonce) external nonReentrant {
        Channel storage ch = _channels[channelId];
        if (ch.status == Status.None) revert UnknownChannel(channelId);
        if (ch.status != Status.Concluded) revert NotConcluded(channelId);
        if (nonce == 0 || nonce > ch.depositNonce) revert UnknownDeposit(nonce);
        uint64 credited = ch.settlement.depositNonce;
        if (nonce <= credited) revert DepositWasCredited(nonce, credited);
        DepositRecord storage d = ch.deposits[nonce];
        if (d.refunded) revert AlreadyRefunded(nonce);
        uint256 ti = d.tokenIndex;
        address token = ch.tokens[ti];
        uint256 refunded = ch.refundedTotal[ti] + d.amount;
        if (ch.settlement.totals[ti] + refunded > ch.deposited[ti]) revert RefundExceedsDeposits(token);
        d.refunded = true;
        ch.refundedTotal[ti] = refunded;
        emit DepositRefunded(channelId, nonce, d.account, token, d.amount);
        IERC20(token).safeTransfer(d.account, d.amount);
    }

    // ---------------------------------------------------------------- slashing

    /// @notice Slash an author who signed two operations with the same (channel, author, seq)
    /// and different content. Arguments are `Equivocation.contract_args()` of crdt/graph.py.
    function slashEquivocation(
        bytes32 channelId,
        address author,
        uint64 seq,
        bytes32 contentHashA,
        bytes calldata signatureA,
        bytes32 contentHashB,
        bytes calldata signatureB
    ) external nonReentrant {
        Channel storage ch = _channels[channelId];
        if (ch.status == Status.None) revert UnknownChannel(channelId);
        if (ch.participantIndex[author] == 0) revert NotAParticipant(author);
        if (contentHashA == contentHashB) revert NotEquivocation();
        address a = _recover(_opDigest(channelId, author, seq, contentHashA), signatureA, 0);
        address b = _recover(_opDigest(channelId, author, seq, contentHashB), signatureB, 1);
        if (a != author || b != author) revert SignerMismatch(a, b);
        _slash(ch, channelId, author, 1);
    }

    /// @notice Slash a participant who signed two different checkpoints of one channel with
    /// the same version.
    function slashDoubleSign(
        Checkpoint calldata a,
        bytes calldata signatureA,
        Checkpoint calldata b,
        bytes calldata signatureB
    ) external nonReentrant {
        bytes32 channelId = a.channel;
        Channel storage ch = _channels[channelId];
        if (ch.status == Status.None) revert UnknownChannel(channelId);
        if (b.channel != channelId || b.version != a.version) revert CheckpointMismatch();
        bytes32 hashA = _checkpointStructHash(a);
        bytes32 hashB = _checkpointStructHash(b);
        if (hashA == hashB) revert NotDoubleSign();
        address signerA = _recover(_hashTypedDataV4(hashA), signatureA, 0);
        address signerB = _recover(_hashTypedDataV4(hashB), signatureB, 1);
        if (signerA != signerB) revert SignerMismatch(signerA, signerB);
        if (ch.participantIndex[signerA] == 0) revert NotAParticipant(signerA);
        _slash(ch, channelId, signerA, 2);
    }

    // ---------------------------------------------------------------- views

    function getChannel(bytes32 channelId)
        external
        view
        returns (
            Status status,
            address[] memory participants,
            uint256 threshold,
            uint256 disputeWindow,
            address[] memory tokens,
            uint256 minBond,
            uint64 depositNonce,
            uint256 insurance
        )
    {
        Channel storage ch = _channels[channelId];
        return (
            ch.status,
            ch.participants,
            ch.threshold,
            ch.disputeWindow,
            ch.tokens,
            ch.minBond,
            ch.depositNonce,
            ch.insurance
        );
    }

    function getSettlement(bytes32 channelId) external view returns (Settlement memory) {
        return _channels[channelId].settlement;
    }

    function depositOf(bytes32 channelId, uint64 nonce) external view returns (DepositRecord memory) {
        return _channels[channelId].deposits[nonce];
    }

    /// @notice Per channel token: sum deposited, claimed and refunded (token decimals).
    function tokenTotals(bytes32 channelId, address token)
        external
        view
        returns (uint256 deposited, uint256 claimed, uint256 refunded)
    {
        Channel storage ch = _channels[channelId];
        uint256 ti = ch.tokenIndex[token];
        if (ti == 0) revert UnknownToken(token);
        return (ch.deposited[ti - 1], ch.claimedTotal[ti - 1], ch.refundedTotal[ti - 1]);
    }

    function bondOf(bytes32 channelId, address participant) external view returns (Bond memory) {
        return _channels[channelId].bonds[participant];
    }

    function isClaimed(bytes32 channelId, bytes32 leaf) external view returns (bool) {
        return _channels[channelId].claimed[leaf];
    }

    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /// @notice The EIP-712 digest a participant signs for `checkpoint`.
    function checkpointDigest(Checkpoint calldata checkpoint) external view returns (bytes32) {
        return _hashTypedDataV4(_checkpointStructHash(checkpoint));
    }

    // ---------------------------------------------------------------- internals

    function _requireOpen(Channel storage ch, bytes32 channelId) private view {
        Status status = ch.status;
        if (status == Status.Open) return;
        if (status == Status.None) revert UnknownChannel(channelId);
        if (status == Status.Pending) revert SettlementPending(channelId);
        revert ChannelConcluded(channelId);
    }

    function _checkCheckpoint(Channel storage ch, Checkpoint calldata checkpoint, bytes[] calldata signatures)
        private
        view
    {
        uint256 k = ch.tokens.length;
        if (checkpoint.totals.length != k) revert WrongTotalsLength(checkpoint.totals.length, k);
        for (uint256 i = 0; i < k; ++i) {
            if (checkpoint.totals[i] > ch.deposited[i]) {
                revert TotalsExceedDeposits(ch.tokens[i], checkpoint.totals[i], ch.deposited[i]);
            }
        }
        if (checkpoint.depositNonce > ch.depositNonce) {
            revert DepositNonceTooHigh(checkpoint.depositNonce, ch.depositNonce);
        }
        bytes32 digest = _hashTypedDataV4(_checkpointStructHash(checkpoint));
        uint256 seen; // bit i set = participant i signed
        uint256 count;
        for (uint256 i = 0; i < signatures.length; ++i) {
            address signer = _recover(digest, signatures[i], i);
            uint256 index = ch.participantIndex[signer];
            if (index == 0) revert NotAParticipant(signer);
            uint256 bit = 1 << (index - 1);
            if (seen & bit != 0) revert DuplicateSigner(signer);
            seen |= bit;
            ++count;
        }
        if (count < ch.threshold) revert NotEnoughSignatures(count, ch.threshold);
    }

    function _store(Channel storage ch, Checkpoint calldata checkpoint) private returns (uint64 finalizesAt) {
        Settlement storage s = ch.settlement;
        finalizesAt = uint64(block.timestamp) + ch.disputeWindow;
        s.version = checkpoint.version;
        s.depositNonce = checkpoint.depositNonce;
        s.time = checkpoint.time;
        s.finalizesAt = finalizesAt;
        s.payoutRoot = checkpoint.payoutRoot;
        s.stateHash = checkpoint.stateHash;
        s.totals = checkpoint.totals;
    }

    function _checkpointStructHash(Checkpoint calldata c) private pure returns (bytes32) {
        return keccak256(
            abi.encode(
                CHECKPOINT_TYPEHASH,
                c.channel,
                c.version,
                c.payoutRoot,
                c.stateHash,
                keccak256(abi.encodePacked(c.totals)),
                c.depositNonce,
                c.time
            )
        );
    }

    function _opDigest(bytes32 channelId, address author, uint64 seq, bytes32 contentHash)
        private
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(keccak256(abi.encode(OP_TYPEHASH, channelId, author, seq, contentHash)));
    }

    function _recover(bytes32 digest, bytes calldata signature, uint256 index) private pure returns (address) {
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecoverCalldata(digest, signature);
        if (err != ECDSA.RecoverError.NoError || signer == address(0)) revert InvalidSignature(index);
        return signer;
    }

    function _slash(Channel storage ch, bytes32 channelId, address offender, uint8 offence) private {
        Bond storage b = ch.bonds[offender];
        uint256 amount = b.bonded + b.unbonding;
        if (amount == 0) revert NothingToSlash(offender);
        b.bonded = 0;
        b.unbonding = 0;
        uint256 toReporter = amount / 2;
        uint256 toInsurance = amount - toReporter;
        ch.insurance += toInsurance;
        emit Slashed(channelId, offender, msg.sender, offence, toReporter, toInsurance);
        _sendNative(msg.sender, toReporter);
    }

    function _sendNative(address to, uint256 amount) private {
        (bool ok,) = payable(to).call{value: amount}("");
        if (!ok) revert NativeTransferFailed(to, amount);
    }
}
