// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @title Parley adjudicator: one contract, many multi-party state channels that stay open.
/// @notice A channel is opened with its participants, BFT threshold, dispute window, tokens and
/// minimum bond. Once every participant has bonded, participants deposit ERC-20 tokens (each
/// deposit gets the next nonce of the channel). A checkpoint certified by at least `threshold`
/// bonded participants (EIP-712 signatures) can be proposed at any time; a strictly newer one
/// replaces it within its dispute window, which does not restart. Once the window has passed,
/// the checkpoint is finalised and the channel carries on: its withdrawal leaves (each account's
/// cumulative withdrawals, which only grow) pay the difference against what was paid already.
/// A close (with a certificate, or at the newest checkpoint on-chain) starts one more window,
/// after which the channel concludes: every balance leaf is paid once, and deposits the final
/// checkpoint did not credit are refunded.
///
/// Invariants (per channel and token; amounts in token units):
/// - withdrawals paid <= the finalised checkpoint's withdrawn total, balance claims <= its total,
///   and total + withdrawn <= credited deposits (checked at propose), total + withdrawn +
///   refunds <= credited deposits (checked at refund): a channel never pays out more than it
///   took in, whatever its quorum signs, so other channels' funds in this contract are safe;
/// - deposits are credited in whole e9 units (the rest goes back to the depositor at once), and
///   the core apportions balance leaves to sum to the whole channel: no dust is stranded;
/// - the contract holds at least `held[token]` of every token and each payout lowers its balance
///   by exactly the amount paid, or the call reverts: a rebasing or fee-taking token cannot pay
///   one channel out of another's share;
/// - a dispute lasts at most one window from its first proposal (challenges do not extend it),
///   plus one more window once for a close;
/// - a balance leaf is paid at most once, a withdrawal leaf pays only its increase; state is
///   written before any token leaves (checks, effects, interactions), and every function that
///   moves value is `nonReentrant`;
/// - signers are counted with a bitmap over the participant index (`|=`), a repeated signer
///   reverts, a signer below the minimum bond does not count, and ECDSA rejects high-s and
///   malformed signatures;
/// - a signature is bound to this chain and this contract (EIP-712 domain) and to one channel
///   (the channel id is a field of every signed struct); slashing evidence is used once.
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
    /// @notice The leaf kinds of a checkpoint's payout tree.
    uint8 public constant BALANCE_LEAF = 0;
    uint8 public constant WITHDRAWN_LEAF = 1;

    bytes32 public constant CHECKPOINT_TYPEHASH = keccak256(
        "Checkpoint(bytes32 channel,uint64 version,bytes32 payoutRoot,bytes32 stateHash,"
        "uint256[] totals,uint256[] withdrawn,uint64 depositNonce,uint64 time)"
    );
    bytes32 public constant OP_TYPEHASH = keccak256("Op(bytes32 channel,address author,uint64 seq,bytes32 contentHash)");

    enum Status {
        None,
        Open,
        Closing,
        Concluded
    }

    /// @notice A checkpoint as the participants sign it (EIP-712 struct `Checkpoint`).
    struct Checkpoint {
        bytes32 channel;
        uint64 version;
        bytes32 payoutRoot; // the root over balance and withdrawal leaves
        bytes32 stateHash;
        uint256[] totals; // per channel token, token decimals: the sum of the balance leaves
        uint256[] withdrawn; // per channel token: the sum of the withdrawal leaves (cumulative)
        uint64 depositNonce; // the highest deposit nonce the checkpoint credits
        uint64 time; // checkpoint time, ms (advisory on-chain)
    }

    /// @notice A checkpoint the contract registered (the finalised one, or the one in dispute).
    struct Settlement {
        uint64 version;
        uint64 depositNonce;
        uint64 time;
        uint64 finalizesAt;
        bytes32 payoutRoot;
        bytes32 stateHash;
        uint256[] totals;
        uint256[] withdrawn;
    }

    struct DepositRecord {
        address account;
        uint64 tokenIndex;
        bool refunded;
        uint256 amount; // credited, token decimals
    }

    struct Bond {
        uint256 bonded;
        uint256 unbonding;
        uint64 readyAt;
    }

    struct Channel {
        Status status;
        bool disputing; // a checkpoint is in its dispute window (`proposed`)
        uint64 disputeWindow;
        uint64 depositNonce;
        uint16 threshold;
        uint16 fullyBonded; // participants whose bond is at least minBond
        uint256 minBond;
        uint256 insurance;
        address[] participants;
        address[] tokens;
        mapping(address => uint256) participantIndex; // 1-based; 0 = not a participant
        mapping(address => uint256) tokenIndex; // 1-based; 0 = not a channel token
        mapping(uint256 => uint256) unit; // token index -> token units in one e9 step (1 if <= 9 decimals)
        mapping(uint256 => uint256) deposited; // token index -> credited deposits
        mapping(uint256 => uint256) claimedTotal; // token index -> balance leaves paid
        mapping(uint256 => uint256) withdrawnPaid; // token index -> withdrawals paid
        mapping(uint256 => uint256) refundedTotal; // token index -> refunds
        mapping(uint64 => DepositRecord) deposits;
        mapping(bytes32 => bool) claimed; // balance leaf -> paid
        mapping(address => mapping(uint256 => uint256)) withdrawalPaid; // account -> token index -> paid
        mapping(address => Bond) bonds;
        mapping(uint64 => Settlement) registered; // every checkpoint proposed, by version
        uint64 finalizedVersion; // 0: none yet
        uint64 proposedVersion; // the one in dispute, while `disputing`
    }

    mapping(bytes32 => Channel) private _channels;
    /// @notice What the contract holds of each token for all channels together.
    mapping(address => uint256) public held;
    /// @notice Slashing evidence already used: keccak256(offence, channel, offender, seq or version).
    mapping(bytes32 => bool) public evidenceUsed;

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
    event DepositRemainderReturned(bytes32 indexed channelId, uint64 indexed nonce, address to, uint256 amount);
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
        address proposer,
        bool closing
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
    event CloseRequested(bytes32 indexed channelId, uint64 indexed version, uint64 finalizesAt, address by);
    event SettlementFinalized(bytes32 indexed channelId, uint64 indexed version, bytes32 payoutRoot, bool concluded);
    event Claimed(bytes32 indexed channelId, address indexed account, address indexed token, uint256 amount);
    event WithdrawalClaimed(
        bytes32 indexed channelId, address indexed account, address indexed token, uint256 amount, uint256 cumulative
    );
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
    error ChannelClosing(bytes32 channelId);
    error NotConcluded(bytes32 channelId);
    error NoParticipants();
    error TooManyParticipants(uint256 count, uint256 maximum);
    error NoTokens();
    error TooManyTokens(uint256 count, uint256 maximum);
    error ZeroAddress();
    error DuplicateParticipant(address participant);
    error DuplicateToken(address token);
    error TokenWithoutDecimals(address token);
    error BadThreshold(uint256 threshold, uint256 participants);
    error DisputeWindowOutOfRange(uint256 window, uint256 minimum, uint256 maximum);
    error NotAParticipant(address account);
    error UnknownToken(address token);
    error ZeroAmount();
    error BondsMissing(uint256 bonded, uint256 participants);
    error SettlementPending(bytes32 channelId);
    error NoSettlementPending(bytes32 channelId);
    error NothingToClose(bytes32 channelId);
    error ZeroVersion();
    error VersionNotNewer(uint64 version, uint64 current);
    error WrongTotalsLength(uint256 length, uint256 tokens);
    error TotalsExceedDeposits(address token, uint256 total, uint256 deposited);
    error WithdrawalsShrank(address token, uint256 withdrawn, uint256 finalized);
    error DepositNonceTooHigh(uint64 depositNonce, uint64 current);
    error DepositNonceTooLow(uint64 depositNonce, uint64 finalized);
    error InvalidSignature(uint256 index);
    error DuplicateSigner(address signer);
    error NotEnoughSignatures(uint256 count, uint256 threshold);
    error DisputeWindowOpen(uint64 finalizesAt);
    error DisputeWindowClosed(uint64 finalizesAt);
    error NothingFinalized(bytes32 channelId);
    error AlreadyClaimed(bytes32 leaf);
    error InvalidProof();
    error ClaimExceedsTotal(address token, uint256 claimed, uint256 total);
    error NothingToWithdraw(uint256 cumulative, uint256 paid);
    error UnknownDeposit(uint64 nonce);
    error DepositWasCredited(uint64 nonce, uint64 creditedUpTo);
    error AlreadyRefunded(uint64 nonce);
    error RefundExceedsDeposits(address token);
    error TokenBalanceShrank(address token, uint256 balance, uint256 held);
    error TokenMisbehaved(address token, uint256 expected, uint256 moved);
    error BondBelowMinimum(uint256 total, uint256 minBond);
    error InsufficientBond(uint256 requested, uint256 available);
    error NoBondToWithdraw();
    error UnbondNotReady(uint64 readyAt);
    error NothingToSlash(address offender);
    error EvidenceUsed(bytes32 evidence);
    error NotEquivocation();
    error NotDoubleSign();
    error CheckpointMismatch();
    error SignerMismatch(address signerA, address signerB);
    error NativeTransferFailed(address to, uint256 amount);

    constructor() EIP712("Parley", "1") {}

    // ---------------------------------------------------------------- channels

    /// @notice Open a channel. Its id is keccak256(abi.encode(chainid, this, participants,
    /// threshold, disputeWindow, tokens, minBond, nonce)), the formula of `crdt/genesis.py`.
    /// Every token must report its decimals (deposits are credited in whole e9 units of it).
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
        if (minBond == 0) ch.fullyBonded = uint16(n);
        for (uint256 i = 0; i < tokens.length; ++i) {
            address t = tokens[i];
            if (t == address(0)) revert ZeroAddress();
            if (ch.tokenIndex[t] != 0) revert DuplicateToken(t);
            ch.tokenIndex[t] = i + 1;
            uint8 decimals;
            try IERC20Metadata(t).decimals() returns (uint8 d) {
                decimals = d;
            } catch {
                revert TokenWithoutDecimals(t);
            }
            ch.unit[i] = decimals > 9 ? 10 ** (decimals - 9) : 1;
        }
        ch.tokens = tokens;
        emit ChannelOpened(channelId, participants, threshold, disputeWindow, tokens, minBond, nonce);
    }

    /// @notice Deposit `amount` of `token` (token decimals) for participant `account`, once every
    /// participant has bonded. What actually arrived is credited in whole e9 units (for a token
    /// of more than 9 decimals); the remainder goes back to the sender in the same call. Allowed
    /// while a checkpoint is in dispute (a later checkpoint credits it), not once closing.
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
        if (ch.fullyBonded < ch.participants.length) revert BondsMissing(ch.fullyBonded, ch.participants.length);
        IERC20 erc20 = IERC20(token);
        uint256 before = erc20.balanceOf(address(this));
        if (before < held[token]) revert TokenBalanceShrank(token, before, held[token]);
        erc20.safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = erc20.balanceOf(address(this)) - before;
        uint256 remainder = received % ch.unit[ti - 1];
        uint256 credited = received - remainder;
        if (credited == 0) revert ZeroAmount();
        nonce = ch.depositNonce + 1;
        ch.depositNonce = nonce;
        ch.deposited[ti - 1] += credited;
        ch.deposits[nonce] = DepositRecord(account, uint64(ti - 1), false, credited);
        held[token] += credited;
        emit Deposited(channelId, nonce, account, token, credited);
        if (remainder != 0) {
            emit DepositRemainderReturned(channelId, nonce, msg.sender, remainder);
            _pay(token, msg.sender, remainder);
        }
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
        if (ch.minBond != 0 && b.bonded < ch.minBond) ch.fullyBonded += 1;
        b.bonded = total;
        emit Bonded(channelId, msg.sender, msg.value, total);
    }

    /// @notice Start unbonding `amount`. It stays slashable for one dispute window and can be
    /// withdrawn after that. Not allowed while the channel is closing. While the channel is
    /// open, what stays bonded must be 0 or at least `minBond`; below it the participant's
    /// signatures stop counting and deposits stop until it bonds again.
    function unbond(bytes32 channelId, uint256 amount) external {
        Channel storage ch = _channels[channelId];
        if (ch.status == Status.None) revert UnknownChannel(channelId);
        if (ch.status == Status.Closing) revert ChannelClosing(channelId);
        Bond storage b = ch.bonds[msg.sender];
        if (amount == 0) revert ZeroAmount();
        if (amount > b.bonded) revert InsufficientBond(amount, b.bonded);
        uint256 rest = b.bonded - amount;
        if (rest != 0 && rest < ch.minBond && ch.status == Status.Open) revert BondBelowMinimum(rest, ch.minBond);
        if (ch.minBond != 0 && b.bonded >= ch.minBond && rest < ch.minBond) ch.fullyBonded -= 1;
        b.bonded = rest;
        b.unbonding += amount;
        b.readyAt = uint64(block.timestamp) + ch.disputeWindow;
        emit UnbondStarted(channelId, msg.sender, amount, b.readyAt);
    }

    /// @notice Withdraw what finished unbonding (not while the channel is closing).
    function withdrawBond(bytes32 channelId) external nonReentrant {
        Channel storage ch = _channels[channelId];
        if (ch.status == Status.None) revert UnknownChannel(channelId);
        if (ch.status == Status.Closing) revert ChannelClosing(channelId);
        Bond storage b = ch.bonds[msg.sender];
        uint256 amount = b.unbonding;
        if (amount == 0) revert NoBondToWithdraw();
        if (block.timestamp < b.readyAt) revert UnbondNotReady(b.readyAt);
        b.unbonding = 0;
        emit BondWithdrawn(channelId, msg.sender, amount);
        _sendNative(msg.sender, amount);
    }

    // ---------------------------------------------------------------- checkpoints

    /// @notice Register a certified checkpoint newer than the finalised one and start its
    /// dispute window. When the window has passed, `finalizeSettlement` makes its withdrawals
    /// claimable and the channel stays open.
    function proposeSettlement(Checkpoint calldata checkpoint, bytes[] calldata signatures) external {
        bytes32 channelId = checkpoint.channel;
        Channel storage ch = _channels[channelId];
        _requireOpen(ch, channelId);
        if (ch.disputing) revert SettlementPending(channelId);
        if (checkpoint.version == 0) revert ZeroVersion();
        if (checkpoint.version <= ch.finalizedVersion) revert VersionNotNewer(checkpoint.version, ch.finalizedVersion);
        _checkCheckpoint(ch, checkpoint, signatures);
        uint64 finalizesAt = uint64(block.timestamp) + ch.disputeWindow;
        _register(ch, checkpoint, finalizesAt);
        ch.disputing = true;
        emit SettlementProposed(
            channelId, checkpoint.version, checkpoint.payoutRoot, checkpoint.stateHash, checkpoint.depositNonce,
            finalizesAt, msg.sender, false
        );
    }

    /// @notice Close the channel with a certified checkpoint at least as new as any the
    /// contract holds: one dispute window from now (newer checkpoints may still replace it),
    /// then the channel concludes and its balance leaves are paid. The emergency exit.
    function closeChannel(Checkpoint calldata checkpoint, bytes[] calldata signatures) external {
        bytes32 channelId = checkpoint.channel;
        Channel storage ch = _channels[channelId];
        _requireOpen(ch, channelId);
        if (checkpoint.version == 0) revert ZeroVersion();
        uint64 newest = ch.disputing ? ch.proposedVersion : ch.finalizedVersion;
        if (checkpoint.version < newest || (ch.disputing && checkpoint.version == newest)) {
            revert VersionNotNewer(checkpoint.version, newest);
        }
        _checkCheckpoint(ch, checkpoint, signatures);
        uint64 finalizesAt = uint64(block.timestamp) + ch.disputeWindow;
        if (checkpoint.version == ch.finalizedVersion) {
            // the finalised checkpoint itself (a version is certified once): close at it
            ch.proposedVersion = checkpoint.version;
            ch.registered[checkpoint.version].finalizesAt = finalizesAt;
        } else {
            _register(ch, checkpoint, finalizesAt);
        }
        ch.disputing = true;
        ch.status = Status.Closing;
        emit SettlementProposed(
            channelId, checkpoint.version, checkpoint.payoutRoot, checkpoint.stateHash, checkpoint.depositNonce,
            finalizesAt, msg.sender, true
        );
    }

    /// @notice A participant closes the channel at the newest checkpoint the contract holds,
    /// without a certificate: the one in dispute (its window is kept) or else the finalised
    /// one (one window from now). Then the channel concludes as with `closeChannel`.
    function requestClose(bytes32 channelId) external {
        Channel storage ch = _channels[channelId];
        _requireOpen(ch, channelId);
        if (ch.participantIndex[msg.sender] == 0) revert NotAParticipant(msg.sender);
        if (!ch.disputing) {
            uint64 version = ch.finalizedVersion;
            if (version == 0) revert NothingToClose(channelId);
            ch.proposedVersion = version;
            ch.registered[version].finalizesAt = uint64(block.timestamp) + ch.disputeWindow;
            ch.disputing = true;
        }
        ch.status = Status.Closing;
        Settlement storage s = ch.registered[ch.proposedVersion];
        emit CloseRequested(channelId, s.version, s.finalizesAt, msg.sender);
    }

    /// @notice Replace the checkpoint in dispute with a certified one of a strictly higher
    /// version, before its window ends. The window is not restarted: a dispute ends at most one
    /// window after it began, however many old certificates a griefer holds.
    function challengeSettlement(Checkpoint calldata checkpoint, bytes[] calldata signatures) external {
        bytes32 channelId = checkpoint.channel;
        Channel storage ch = _channels[channelId];
        if (ch.status == Status.None) revert UnknownChannel(channelId);
        if (ch.status == Status.Concluded) revert ChannelConcluded(channelId);
        if (!ch.disputing) revert NoSettlementPending(channelId);
        uint64 finalizesAt = ch.registered[ch.proposedVersion].finalizesAt;
        if (block.timestamp >= finalizesAt) revert DisputeWindowClosed(finalizesAt);
        uint64 replaced = ch.proposedVersion;
        if (checkpoint.version <= replaced) revert VersionNotNewer(checkpoint.version, replaced);
        _checkCheckpoint(ch, checkpoint, signatures);
        _register(ch, checkpoint, finalizesAt);
        emit SettlementChallenged(
            channelId, checkpoint.version, replaced, checkpoint.payoutRoot, checkpoint.stateHash,
            checkpoint.depositNonce, finalizesAt, msg.sender
        );
    }

    /// @notice Once its window has passed, the checkpoint in dispute becomes the finalised one:
    /// its withdrawals become claimable, and if the channel was closing, it concludes.
    function finalizeSettlement(bytes32 channelId) external {
        Channel storage ch = _channels[channelId];
        if (ch.status == Status.None) revert UnknownChannel(channelId);
        if (ch.status == Status.Concluded) revert ChannelConcluded(channelId);
        if (!ch.disputing) revert NoSettlementPending(channelId);
        Settlement storage s = ch.registered[ch.proposedVersion];
        if (block.timestamp < s.finalizesAt) revert DisputeWindowOpen(s.finalizesAt);
        ch.finalizedVersion = s.version;
        ch.disputing = false;
        bool concluded = ch.status == Status.Closing;
        if (concluded) ch.status = Status.Concluded;
        emit SettlementFinalized(channelId, s.version, s.payoutRoot, concluded);
    }

    // ---------------------------------------------------------------- payouts

    /// @notice Pay the increase of `account`'s cumulative withdrawals of `token` (a withdrawal
    /// leaf of the finalised checkpoint) over what was paid to it already. Anyone may call it;
    /// the tokens always go to `account`.
    function claimWithdrawal(
        bytes32 channelId,
        address account,
        address token,
        uint256 cumulative,
        bytes32[] calldata proof
    ) external nonReentrant {
        Channel storage ch = _channels[channelId];
        if (ch.status == Status.None) revert UnknownChannel(channelId);
        if (ch.finalizedVersion == 0) revert NothingFinalized(channelId);
        Settlement storage f = ch.registered[ch.finalizedVersion];
        uint256 ti = ch.tokenIndex[token];
        if (ti == 0) revert UnknownToken(token);
        bytes32 leaf = _leaf(WITHDRAWN_LEAF, account, token, cumulative);
        if (!MerkleProof.verifyCalldata(proof, f.payoutRoot, leaf)) revert InvalidProof();
        uint256 paid = ch.withdrawalPaid[account][ti - 1];
        if (cumulative <= paid) revert NothingToWithdraw(cumulative, paid);
        uint256 amount = cumulative - paid;
        uint256 paidTotal = ch.withdrawnPaid[ti - 1] + amount;
        if (paidTotal > f.withdrawn[ti - 1]) revert ClaimExceedsTotal(token, paidTotal, f.withdrawn[ti - 1]);
        // effects
        ch.withdrawalPaid[account][ti - 1] = cumulative;
        ch.withdrawnPaid[ti - 1] = paidTotal;
        held[token] -= amount;
        emit WithdrawalClaimed(channelId, account, token, amount, cumulative);
        // interaction
        _pay(token, account, amount);
    }

    /// @notice Pay one balance leaf (account, token, amount) of the final checkpoint, once, after
    /// the channel concluded. Anyone may call it; the tokens always go to `account`.
    function claim(bytes32 channelId, address account, address token, uint256 amount, bytes32[] calldata proof)
        external
        nonReentrant
    {
        Channel storage ch = _channels[channelId];
        if (ch.status == Status.None) revert UnknownChannel(channelId);
        if (ch.status != Status.Concluded) revert NotConcluded(channelId);
        uint256 ti = ch.tokenIndex[token];
        if (ti == 0) revert UnknownToken(token);
        bytes32 leaf = _leaf(BALANCE_LEAF, account, token, amount);
        if (ch.claimed[leaf]) revert AlreadyClaimed(leaf);
        Settlement storage f = ch.registered[ch.finalizedVersion];
        if (!MerkleProof.verifyCalldata(proof, f.payoutRoot, leaf)) revert InvalidProof();
        uint256 claimedSoFar = ch.claimedTotal[ti - 1] + amount;
        uint256 total = f.totals[ti - 1];
        if (claimedSoFar > total) revert ClaimExceedsTotal(token, claimedSoFar, total);
        // effects
        ch.claimed[leaf] = true;
        ch.claimedTotal[ti - 1] = claimedSoFar;
        held[token] -= amount;
        emit Claimed(channelId, account, token, amount);
        // interaction
        if (amount != 0) _pay(token, account, amount);
    }

    /// @notice Return a deposit that the final checkpoint did not credit (its nonce is above the
    /// checkpoint's deposit nonce) to the account it was made for.
    function refundDeposit(bytes32 channelId, uint64 nonce) external nonReentrant {
        Channel storage ch = _channels[channelId];
        if (ch.status == Status.None) revert UnknownChannel(channelId);
        if (ch.status != Status.Concluded) revert NotConcluded(channelId);
        if (nonce == 0 || nonce > ch.depositNonce) revert UnknownDeposit(nonce);
        Settlement storage f = ch.registered[ch.finalizedVersion];
        uint64 credited = f.depositNonce;
        if (nonce <= credited) revert DepositWasCredited(nonce, credited);
        DepositRecord storage d = ch.deposits[nonce];
        if (d.refunded) revert AlreadyRefunded(nonce);
        uint256 ti = d.tokenIndex;
        address token = ch.tokens[ti];
        uint256 refunded = ch.refundedTotal[ti] + d.amount;
        if (f.totals[ti] + f.withdrawn[ti] + refunded > ch.deposited[ti]) {
            revert RefundExceedsDeposits(token);
        }
        d.refunded = true;
        ch.refundedTotal[ti] = refunded;
        held[token] -= d.amount;
        emit DepositRefunded(channelId, nonce, d.account, token, d.amount);
        _pay(token, d.account, d.amount);
    }

    // ---------------------------------------------------------------- slashing

    /// @notice Slash an author who signed two operations with the same (channel, author, seq)
    /// and different content. Arguments are `Equivocation.contract_args()` of crdt/graph.py.
    /// Each (author, seq) can be used once: a participant who bonds again after a slash is not
    /// slashed again for the same equivocation.
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
        _useEvidence(keccak256(abi.encode(uint8(1), channelId, author, seq)));
        _slash(ch, channelId, author, 1);
    }

    /// @notice Slash a participant who signed two different checkpoints of one channel with
    /// the same version. Each (signer, version) can be used once.
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
        _useEvidence(keccak256(abi.encode(uint8(2), channelId, signerA, a.version)));
        _slash(ch, channelId, signerA, 2);
    }

    // ---------------------------------------------------------------- views

    function getChannel(bytes32 channelId)
        external
        view
        returns (
            Status status,
            bool disputing,
            address[] memory participants,
            uint256 threshold,
            uint256 disputeWindow,
            address[] memory tokens,
            uint256 minBond,
            uint64 depositNonce,
            uint256 insurance,
            uint256 fullyBonded
        )
    {
        Channel storage ch = _channels[channelId];
        return (
            ch.status,
            ch.disputing,
            ch.participants,
            ch.threshold,
            ch.disputeWindow,
            ch.tokens,
            ch.minBond,
            ch.depositNonce,
            ch.insurance,
            ch.fullyBonded
        );
    }

    /// @notice The checkpoint in dispute (meaningful while `disputing`).
    function getSettlement(bytes32 channelId) external view returns (Settlement memory) {
        Channel storage ch = _channels[channelId];
        return ch.registered[ch.proposedVersion];
    }

    /// @notice The newest finalised checkpoint (version 0: none yet).
    function getFinalized(bytes32 channelId) external view returns (Settlement memory) {
        Channel storage ch = _channels[channelId];
        return ch.registered[ch.finalizedVersion];
    }

    function depositOf(bytes32 channelId, uint64 nonce) external view returns (DepositRecord memory) {
        return _channels[channelId].deposits[nonce];
    }

    /// @notice Per channel token (token decimals): credited deposits, balance leaves paid,
    /// refunds, withdrawals paid.
    function tokenTotals(bytes32 channelId, address token)
        external
        view
        returns (uint256 deposited, uint256 claimed, uint256 refunded, uint256 withdrawn)
    {
        Channel storage ch = _channels[channelId];
        uint256 ti = ch.tokenIndex[token];
        if (ti == 0) revert UnknownToken(token);
        return (ch.deposited[ti - 1], ch.claimedTotal[ti - 1], ch.refundedTotal[ti - 1], ch.withdrawnPaid[ti - 1]);
    }

    /// @notice What `account` has been paid of its withdrawals of `token` so far.
    function withdrawalPaid(bytes32 channelId, address account, address token) external view returns (uint256) {
        Channel storage ch = _channels[channelId];
        uint256 ti = ch.tokenIndex[token];
        if (ti == 0) revert UnknownToken(token);
        return ch.withdrawalPaid[account][ti - 1];
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
        if (status == Status.Closing) revert ChannelClosing(channelId);
        revert ChannelConcluded(channelId);
    }

    function _checkCheckpoint(Channel storage ch, Checkpoint calldata checkpoint, bytes[] calldata signatures)
        private
        view
    {
        uint256 k = ch.tokens.length;
        if (checkpoint.totals.length != k) revert WrongTotalsLength(checkpoint.totals.length, k);
        if (checkpoint.withdrawn.length != k) revert WrongTotalsLength(checkpoint.withdrawn.length, k);
        Settlement storage f = ch.registered[ch.finalizedVersion];
        bool any = ch.finalizedVersion != 0;
        for (uint256 i = 0; i < k; ++i) {
            uint256 owed = checkpoint.totals[i] + checkpoint.withdrawn[i];
            if (owed > ch.deposited[i]) revert TotalsExceedDeposits(ch.tokens[i], owed, ch.deposited[i]);
            if (any && checkpoint.withdrawn[i] < f.withdrawn[i]) {
                revert WithdrawalsShrank(ch.tokens[i], checkpoint.withdrawn[i], f.withdrawn[i]);
            }
        }
        if (checkpoint.depositNonce > ch.depositNonce) {
            revert DepositNonceTooHigh(checkpoint.depositNonce, ch.depositNonce);
        }
        if (checkpoint.depositNonce < f.depositNonce) revert DepositNonceTooLow(checkpoint.depositNonce, f.depositNonce);
        bytes32 digest = _hashTypedDataV4(_checkpointStructHash(checkpoint));
        uint256 seen; // bit i set = participant i signed
        uint256 count;
        uint256 minBond = ch.minBond;
        for (uint256 i = 0; i < signatures.length; ++i) {
            address signer = _recover(digest, signatures[i], i);
            uint256 index = ch.participantIndex[signer];
            if (index == 0) revert NotAParticipant(signer);
            uint256 bit = 1 << (index - 1);
            if (seen & bit != 0) revert DuplicateSigner(signer);
            seen |= bit;
            if (minBond == 0 || ch.bonds[signer].bonded >= minBond) ++count; // no bond, no voice
        }
        if (count < ch.threshold) revert NotEnoughSignatures(count, ch.threshold);
    }

    function _register(Channel storage ch, Checkpoint calldata checkpoint, uint64 finalizesAt) private {
        ch.proposedVersion = checkpoint.version;
        Settlement storage s = ch.registered[checkpoint.version];
        s.version = checkpoint.version;
        s.depositNonce = checkpoint.depositNonce;
        s.time = checkpoint.time;
        s.finalizesAt = finalizesAt;
        s.payoutRoot = checkpoint.payoutRoot;
        s.stateHash = checkpoint.stateHash;
        s.totals = checkpoint.totals;
        s.withdrawn = checkpoint.withdrawn;
    }

    function _leaf(uint8 kind, address account, address token, uint256 amount) private pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(kind, account, token, amount))));
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
                keccak256(abi.encodePacked(c.withdrawn)),
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

    /// @notice Send `amount` of `token`; its balance here must fall by exactly that (a token
    /// that takes a fee from the sender, or rebased down, would pay out of another channel).
    function _pay(address token, address to, uint256 amount) private {
        IERC20 erc20 = IERC20(token);
        uint256 before = erc20.balanceOf(address(this));
        erc20.safeTransfer(to, amount);
        uint256 moved = before - erc20.balanceOf(address(this));
        if (moved != amount) revert TokenMisbehaved(token, amount, moved);
        uint256 balance = before - moved;
        if (balance < held[token]) revert TokenBalanceShrank(token, balance, held[token]);
    }

    function _useEvidence(bytes32 evidence) private {
        if (evidenceUsed[evidence]) revert EvidenceUsed(evidence);
        evidenceUsed[evidence] = true;
    }

    function _slash(Channel storage ch, bytes32 channelId, address offender, uint8 offence) private {
        Bond storage b = ch.bonds[offender];
        uint256 amount = b.bonded + b.unbonding;
        if (amount == 0) revert NothingToSlash(offender);
        if (ch.minBond != 0 && b.bonded >= ch.minBond) ch.fullyBonded -= 1;
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
